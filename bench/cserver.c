/*
 * Reference servers for `deno task bench`: what a careful C programmer
 * writes. One thread, epoll, non-blocking sockets.
 *
 *   cserver echo PORT      echo (RFC 862): one 64 KiB buffer shared by all
 *                          connections, a per-connection copy only for bytes
 *                          the peer is not reading yet (backpressure)
 *   cserver daytime PORT   daytime (RFC 867): accept, write, close
 *   cserver udp-echo PORT  echo over UDP: a blocking recvfrom/sendto loop
 *                          (one datagram in hand at a time, as ours)
 *
 * Listens on 127.0.0.1; prints `listening on 127.0.0.1:PORT` on stderr.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct conn {
  int fd;
  char *pending; /* bytes read but not yet written back */
  size_t len, off;
};

static char buf[65536];

static void die(const char *what) {
  fprintf(stderr, "cserver: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void drop(struct conn *c) {
  close(c->fd);
  free(c->pending);
  free(c);
}

/* Writes what is pending; 1 when all is out, 0 when blocked, -1 on error. */
static int flush(struct conn *c) {
  while (c->off < c->len) {
    ssize_t w = write(c->fd, c->pending + c->off, c->len - c->off);
    if (w < 0) return errno == EAGAIN ? 0 : -1;
    c->off += w;
  }
  free(c->pending);
  c->pending = NULL;
  c->len = c->off = 0;
  return 1;
}

static void on_echo(int ep, struct conn *c, uint32_t events) {
  if (c->pending) {
    int r = flush(c);
    if (r < 0) return drop(c);
    if (r == 0) return;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
  }
  (void)events;
  for (;;) {
    ssize_t n = read(c->fd, buf, sizeof buf);
    if (n == 0 || (n < 0 && errno != EAGAIN)) return drop(c);
    if (n < 0) return;
    ssize_t w = write(c->fd, buf, n);
    if (w < 0 && errno != EAGAIN) return drop(c);
    if (w < 0) w = 0;
    if (w < n) {
      c->pending = malloc(n - w);
      memcpy(c->pending, buf + w, n - w);
      c->len = n - w;
      c->off = 0;
      struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
      epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
      return;
    }
    if (n < (ssize_t)sizeof buf) return;
  }
}

/* UDP echo: each datagram back to its sender, as it came. */
static _Noreturn void udp_echo(int port) {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
  socklen_t len = sizeof addr;
  getsockname(fd, (struct sockaddr *)&addr, &len);
  fprintf(stderr, "listening on 127.0.0.1:%d\n", ntohs(addr.sin_port));
  for (;;) {
    struct sockaddr_in from;
    socklen_t from_len = sizeof from;
    ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &from_len);
    if (n < 0) continue;
    sendto(fd, buf, n, 0, (struct sockaddr *)&from, from_len);
  }
}

int main(int argc, char **argv) {
  if (argc == 3 && !strcmp(argv[1], "udp-echo")) udp_echo(atoi(argv[2]));
  if (argc != 3 || (strcmp(argv[1], "echo") && strcmp(argv[1], "daytime"))) {
    fprintf(stderr, "usage: cserver echo|daytime|udp-echo PORT\n");
    return 2;
  }
  int daytime = !strcmp(argv[1], "daytime");
  signal(SIGPIPE, SIG_IGN);
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
  if (listen(lfd, 1024) < 0) die("listen");
  socklen_t len = sizeof addr;
  getsockname(lfd, (struct sockaddr *)&addr, &len);
  fprintf(stderr, "listening on 127.0.0.1:%d\n", ntohs(addr.sin_port));
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  struct epoll_event evs[256];
  for (;;) {
    int n = epoll_wait(ep, evs, 256, -1);
    for (int i = 0; i < n; i++) {
      if (evs[i].data.ptr) {
        on_echo(ep, evs[i].data.ptr, evs[i].events);
        continue;
      }
      for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
        if (fd < 0) break;
        if (daytime) {
          char line[64];
          time_t t = time(NULL);
          snprintf(line, sizeof line, "%.24s\r\n", ctime(&t));
          if (write(fd, line, strlen(line)) < 0) { /* peer gone */ }
          close(fd);
          continue;
        }
        struct conn *c = calloc(1, sizeof *c);
        c->fd = fd;
        struct epoll_event cev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
      }
    }
  }
}
