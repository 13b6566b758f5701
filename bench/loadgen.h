/*
 * What bench/loadgen.c and bench/wsloadgen.c share: the server's address
 * and PID from the command line, the clock, the server's CPU time, the
 * latency percentiles and epoll bookkeeping. Define LOADGEN (the program's
 * name, which starts its error messages) before including it.
 */
#ifndef LOADGEN_H
#define LOADGEN_H

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

#define PERIOD 251          /* prime: a shifted or lost byte is caught */
#define WINDOW (256 * 1024) /* bytes in flight per stream connection */
#define MSG 64

static struct sockaddr_in server;
static int server_pid;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
  fprintf(stderr, LOADGEN ": %s: %s\n", what, strerror(errno));
  exit(1);
}

/* Seconds on CPU of every thread of the server (schedstat: nanoseconds). */
static double server_cpu(void) {
  char path[320];
  if (server_pid <= 0) return 0;
  snprintf(path, sizeof path, "/proc/%d/task", server_pid);
  DIR *dir = opendir(path);
  if (!dir) return 0;
  double total = 0;
  for (struct dirent *e; (e = readdir(dir));) {
    if (e->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "/proc/%d/task/%s/schedstat", server_pid, e->d_name);
    FILE *f = fopen(path, "r");
    unsigned long long ns;
    if (f && fscanf(f, "%llu", &ns) == 1) total += ns / 1e9;
    if (f) fclose(f);
  }
  closedir(dir);
  return total;
}

/* Watches `fd` (its event data `ptr`) for input, and output too if `out`. */
static void epoll_watch(int ep, int fd, void *ptr, int *want_out, int out) {
  struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = ptr};
  if (epoll_ctl(ep, *want_out == -1 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev) < 0)
    die("epoll_ctl");
  *want_out = out;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Sorts the `count` latencies in `lat`; their median and 99th percentile. */
static void percentiles(double *lat, size_t count, double *p50, double *p99) {
  qsort(lat, count, sizeof *lat, cmp_double);
  *p50 = count ? lat[count / 2] : 0;
  *p99 = count ? lat[(size_t)(count * 0.99)] : 0;
}

/*
 * The arguments both take, `SCENARIO HOST PORT CONNS N [SERVER_PID]`: the
 * server's address and PID; and as many descriptors as the hard limit
 * allows. 0, or 2 (`usage` or a bad address printed) to exit with.
 */
static int start(int argc, char **argv, const char *usage) {
  if (argc != 6 && argc != 7) {
    fprintf(stderr, "%s\n", usage);
    return 2;
  }
  server.sin_family = AF_INET;
  server.sin_port = htons(atoi(argv[3]));
  if (inet_pton(AF_INET, argv[2], &server.sin_addr) != 1) {
    fprintf(stderr, LOADGEN ": bad address %s\n", argv[2]);
    return 2;
  }
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  if (argc == 7) server_pid = atoi(argv[6]);
  return 0;
}

#endif
