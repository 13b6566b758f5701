/*
 * WebSocket load generator for `deno task bench --family websocket`: one
 * thread, epoll, non-blocking sockets, as bench/loadgen.c (whose JSON it
 * prints), but each connection upgrades first and speaks RFC 6455 frames:
 *
 *   wsloadgen pingpong HOST PORT CONNS SECONDS [SERVER_PID]
 *       a 64-byte binary message back and forth, verified
 *   wsloadgen stream   HOST PORT CONNS SECONDS [SERVER_PID]
 *       64 KiB binary messages, up to 256 KiB in flight a connection,
 *       the echoed bytes verified (whatever frames they come back in)
 *
 * Frames are masked, as a client's must be, with a zero key: the server
 * unmasks as it would any other, and the load generator spends nothing on
 * it.
 */
#define _GNU_SOURCE
#define LOADGEN "wsloadgen"
#include "loadgen.h"
#include <fcntl.h>
#include <netinet/tcp.h>
#include <unistd.h>

#define MESSAGE (64 * 1024)

static uint8_t pattern[PERIOD + MESSAGE];

/* A connection, upgraded (blocking), then made non-blocking. */
static int open_upgraded(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) die("socket");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr *)&server, sizeof server) < 0) die("connect");
  char request[512];
  int n = snprintf(request, sizeof request,
                   "GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n",
                   ntohs(server.sin_port));
  if (write(fd, request, n) != n) die("write");
  /* Byte by byte up to the blank line: nothing after it is taken. */
  char head[4096];
  size_t got = 0;
  while (got < sizeof head - 1) {
    ssize_t r = read(fd, head + got, 1);
    if (r <= 0) die("read upgrade");
    got++;
    if (got >= 4 && !memcmp(head + got - 4, "\r\n\r\n", 4)) break;
  }
  head[got] = 0;
  if (strncmp(head, "HTTP/1.1 101", 12) != 0) {
    fprintf(stderr, "wsloadgen: upgrade refused: %.40s\n", head);
    exit(1);
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

struct conn {
  int fd;
  uint64_t sent, received; /* payload bytes */
  double started;
  int want_out;
  /* The frame being read: its header so far, then the payload left. */
  uint8_t header[14];
  int header_len, header_need;
  uint64_t payload_left;
  int opcode;
  /* The frame being written. */
  uint8_t *out;
  size_t out_len, out_done;
};

static void watch(int ep, struct conn *c, int out) {
  epoll_watch(ep, c->fd, c, &c->want_out, out);
}

/* A masked (zero key) binary frame of `len` bytes of `payload` into `frame`. */
static size_t frame(uint8_t *frame, const uint8_t *payload, size_t len) {
  size_t h = 0;
  frame[h++] = 0x82;
  if (len < 126) {
    frame[h++] = 0x80 | len;
  } else if (len < 65536) {
    frame[h++] = 0x80 | 126;
    frame[h++] = len >> 8;
    frame[h++] = len & 0xff;
  } else {
    frame[h++] = 0x80 | 127;
    for (int i = 7; i >= 0; i--) frame[h++] = (uint64_t)len >> (8 * i);
  }
  memset(frame + h, 0, 4);
  h += 4;
  memcpy(frame + h, payload, len);
  return h + len;
}

/*
 * Takes `n` bytes from the server: frame headers, and the payload of
 * binary frames, handed to `data` (which verifies and counts). Returns -1
 * on a close frame or a frame of another kind.
 */
static int take(struct conn *c, const uint8_t *bytes, size_t n,
                int (*data)(struct conn *, const uint8_t *, size_t)) {
  while (n > 0) {
    if (c->payload_left == 0 && c->header_need == 0) c->header_need = 2;
    if (c->header_need > 0) {
      c->header[c->header_len++] = *bytes++;
      n--;
      if (--c->header_need > 0) continue;
      if (c->header_len == 2) {
        int len7 = c->header[1] & 0x7f;
        c->header_need = (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) +
                         (c->header[1] & 0x80 ? 4 : 0);
        if (c->header_need > 0) continue;
      }
      int len7 = c->header[1] & 0x7f;
      uint64_t len = len7;
      if (len7 == 126) len = (c->header[2] << 8) | c->header[3];
      if (len7 == 127) {
        len = 0;
        for (int i = 2; i < 10; i++) len = (len << 8) | c->header[i];
      }
      c->opcode = c->header[0] & 0x0f;
      if (c->opcode != 0 && c->opcode != 2) {
        fprintf(stderr, "wsloadgen: frame of opcode %d from the server\n", c->opcode);
        return -1;
      }
      c->payload_left = len;
      c->header_len = 0;
      continue;
    }
    size_t part = n < c->payload_left ? n : c->payload_left;
    if (data(c, bytes, part) < 0) return -1;
    c->payload_left -= part;
    bytes += part;
    n -= part;
  }
  return 0;
}

static uint8_t request[MSG];

static int pingpong_data(struct conn *c, const uint8_t *bytes, size_t n) {
  if (c->received + n > MSG || memcmp(bytes, request + c->received, n) != 0) {
    fprintf(stderr, "wsloadgen: pingpong: wrong reply\n");
    return -1;
  }
  c->received += n;
  return 0;
}

static int pingpong(int conns, double seconds) {
  int ep = epoll_create1(0);
  struct conn *cs = calloc(conns, sizeof *cs);
  size_t cap = 1 << 20, count = 0;
  double *lat = malloc(cap * sizeof *lat);
  uint8_t out[MSG + 6], buf[4096];
  for (int i = 0; i < MSG; i++) request[i] = 'a' + i % 26;
  size_t out_len = frame(out, request, MSG);
  for (int i = 0; i < conns; i++) {
    cs[i].fd = open_upgraded();
    cs[i].want_out = -1;
    watch(ep, &cs[i], 0);
  }
  struct epoll_event evs[256];
  double cpu = server_cpu(), start = now(), end = start + seconds;
  for (int i = 0; i < conns; i++) {
    cs[i].started = now();
    if (write(cs[i].fd, out, out_len) != (ssize_t)out_len) die("write");
  }
  uint64_t trips = 0;
  for (;;) {
    int n = epoll_wait(ep, evs, 256, 100);
    if (now() >= end) break;
    for (int e = 0; e < n; e++) {
      struct conn *c = evs[e].data.ptr;
      ssize_t r = read(c->fd, buf, sizeof buf);
      if (r == 0 || (r < 0 && errno != EAGAIN)) {
        fprintf(stderr, "wsloadgen: pingpong: server closed a connection\n");
        return 1;
      }
      if (r < 0) continue;
      if (take(c, buf, r, pingpong_data) < 0) return 1;
      if (c->received < MSG) continue;
      double done = now();
      if (count == cap) lat = realloc(lat, (cap *= 2) * sizeof *lat);
      lat[count++] = done - c->started;
      trips++;
      c->received = 0;
      c->started = done;
      if (write(c->fd, out, out_len) != (ssize_t)out_len) die("write");
    }
  }
  double elapsed = now() - start;
  cpu = server_cpu() - cpu;
  double p50, p99;
  percentiles(lat, count, &p50, &p99);
  printf("{\"scenario\":\"ws-pingpong\",\"connections\":%d,\"seconds\":%.3f,"
         "\"round_trips\":%llu,\"per_s\":%.0f,\"p50_us\":%.1f,\"p99_us\":%.1f,"
         "\"server_cpu_ms\":%.1f}\n",
         conns, elapsed, (unsigned long long)trips, trips / elapsed, p50 * 1e6,
         p99 * 1e6, cpu * 1e3);
  return 0;
}

static int stream_data(struct conn *c, const uint8_t *bytes, size_t n) {
  if (memcmp(bytes, pattern + c->received % PERIOD, n) != 0) {
    fprintf(stderr, "wsloadgen: stream: echoed bytes differ at offset %llu\n",
            (unsigned long long)c->received);
    return -1;
  }
  c->received += n;
  return 0;
}

/* Writes what it can of the frame in hand, starting the next within the window. */
static void stream_write(struct conn *c) {
  for (;;) {
    if (c->out_done == c->out_len) {
      if (c->sent - c->received + MESSAGE > WINDOW) return;
      c->out_len = frame(c->out, pattern + c->sent % PERIOD, MESSAGE);
      c->out_done = 0;
      c->sent += MESSAGE;
    }
    ssize_t w = write(c->fd, c->out + c->out_done, c->out_len - c->out_done);
    if (w < 0) {
      if (errno == EAGAIN) return;
      die("write");
    }
    c->out_done += w;
  }
}

static int stream(int conns, double seconds) {
  int ep = epoll_create1(0);
  struct conn *cs = calloc(conns, sizeof *cs);
  static uint8_t buf[65536];
  for (int i = 0; i < conns; i++) {
    cs[i].fd = open_upgraded();
    cs[i].want_out = -1;
    cs[i].out = malloc(MESSAGE + 14);
    watch(ep, &cs[i], 1);
  }
  struct epoll_event evs[256];
  double cpu = server_cpu(), start = now(), end = start + seconds;
  while (now() < end) {
    int n = epoll_wait(ep, evs, 256, 100);
    for (int e = 0; e < n; e++) {
      struct conn *c = evs[e].data.ptr;
      if (evs[e].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        ssize_t r = read(c->fd, buf, sizeof buf);
        if (r == 0 || (r < 0 && errno != EAGAIN)) {
          fprintf(stderr, "wsloadgen: stream: server closed a connection\n");
          return 1;
        }
        if (r > 0 && take(c, buf, r, stream_data) < 0) return 1;
      }
      stream_write(c);
      int out = c->out_done < c->out_len;
      if (out != c->want_out) watch(ep, c, out);
    }
  }
  double elapsed = now() - start;
  uint64_t total = 0;
  for (int i = 0; i < conns; i++) total += cs[i].received;
  cpu = server_cpu() - cpu;
  printf("{\"scenario\":\"ws-stream\",\"connections\":%d,\"seconds\":%.3f,"
         "\"bytes\":%llu,\"mb_per_s\":%.1f,\"verified\":true,\"server_cpu_ms\":%.1f}\n",
         conns, elapsed, (unsigned long long)total, total / elapsed / 1e6, cpu * 1e3);
  return 0;
}

int main(int argc, char **argv) {
  int code = start(argc, argv,
                   "usage: wsloadgen pingpong|stream HOST PORT CONNS SECONDS [SERVER_PID]");
  if (code != 0) return code;
  for (size_t i = 0; i < sizeof pattern; i++) pattern[i] = (i % PERIOD) * 7 + 3;
  int conns = atoi(argv[4]);
  if (!strcmp(argv[1], "pingpong")) return pingpong(conns, atof(argv[5]));
  if (!strcmp(argv[1], "stream")) return stream(conns, atof(argv[5]));
  fprintf(stderr, "wsloadgen: unknown scenario %s\n", argv[1]);
  return 2;
}
