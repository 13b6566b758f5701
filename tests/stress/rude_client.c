/*
 * Misbehaving TCP clients for the stress tests, compiled at test time (Deno
 * cannot set SO_LINGER, shut down only the read side, or push bytes
 * without an event loop in between).
 *
 *   rude_client rst HOST PORT COUNT BYTES
 *       COUNT times: connect, send BYTES, read what comes back within 10 ms,
 *       then close with SO_LINGER 0 (an RST instead of a FIN).
 *   rude_client shutrd HOST PORT COUNT BYTES
 *       COUNT times: connect, shutdown(SHUT_RD), send BYTES, close.
 *   rude_client push HOST PORT TOTAL SECONDS
 *       connect and send up to TOTAL bytes, never reading, until done, stalled
 *       for 2 s or SECONDS elapsed; print `sent N complete|stalled|timeout`,
 *       then hold the connection until stdin ends, and reset it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static char buffer[1 << 20];

static int dial(const char *host, int port) {
  struct sockaddr_in addr;
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
    fprintf(stderr, "bad host %s\n", host);
    exit(2);
  }
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
    perror("connect");
    exit(1);
  }
  return fd;
}

static void send_all(int fd, long n) {
  while (n > 0) {
    long chunk = n < (long)sizeof buffer ? n : (long)sizeof buffer;
    ssize_t w = send(fd, buffer, chunk, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return; /* reset by the server: fine for a rude client */
    }
    n -= w;
  }
}

static void reset(int fd) {
  struct linger lg = {1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(fd);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: rude_client rst|shutrd|push HOST PORT N M\n");
    return 2;
  }
  const char *mode = argv[1], *host = argv[2];
  int port = atoi(argv[3]);
  long n = atol(argv[4]), m = atol(argv[5]);
  for (size_t i = 0; i < sizeof buffer; i++) buffer[i] = (char)(i * 31 + 7);
  if (strcmp(mode, "rst") == 0) {
    for (long i = 0; i < n; i++) {
      int fd = dial(host, port);
      send_all(fd, m);
      struct pollfd p = {fd, POLLIN, 0};
      if (poll(&p, 1, 10) > 0) recv(fd, buffer, 4096, MSG_DONTWAIT);
      reset(fd);
    }
    printf("done %ld\n", n);
  } else if (strcmp(mode, "shutrd") == 0) {
    for (long i = 0; i < n; i++) {
      int fd = dial(host, port);
      shutdown(fd, SHUT_RD);
      send_all(fd, m);
      close(fd);
    }
    printf("done %ld\n", n);
  } else if (strcmp(mode, "push") == 0) {
    int fd = dial(host, port);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    long sent = 0;
    const char *why = "complete";
    double start = now();
    while (sent < n) {
      if (now() - start > m) {
        why = "timeout";
        break;
      }
      long chunk = n - sent < (long)sizeof buffer ? n - sent : (long)sizeof buffer;
      ssize_t w = send(fd, buffer, chunk, MSG_NOSIGNAL);
      if (w > 0) {
        sent += w;
        continue;
      }
      if (w < 0 && errno != EAGAIN && errno != EINTR) {
        why = "reset";
        break;
      }
      struct pollfd p = {fd, POLLOUT, 0};
      if (poll(&p, 1, 2000) == 0) {
        why = "stalled";
        break;
      }
    }
    printf("sent %ld %s %.3f\n", sent, why, now() - start);
    fflush(stdout);
    while (read(0, buffer, sizeof buffer) > 0) {
    }
    reset(fd);
  } else {
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
  }
  return 0;
}
