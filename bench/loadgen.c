/*
 * Load generator for `deno task bench`: one thread, epoll, non-blocking
 * sockets. Prints one JSON object on stdout.
 *
 *   loadgen stream   HOST PORT CONNS SECONDS   echo, continuous, verified
 *   loadgen pingpong HOST PORT CONNS SECONDS   64-byte request/response
 *   loadgen connect  HOST PORT CONNS SECONDS   connect/read to EOF/close
 *   loadgen short    HOST PORT CONNS SECONDS   connect, one 64-byte round
 *                                              trip, close (an echo server)
 *   loadgen idle     HOST PORT CONNS PID       N idle connections, RSS of PID
 *   loadgen udp      HOST PORT SOCKS SECONDS   UDP ping-pong: 64-byte datagrams,
 *                                              each different, one in flight a
 *                                              socket; one unanswered for 20 ms
 *                                              is counted lost and replaced
 *
 * With a server PID as a sixth argument, all but idle also print the
 * CPU time the server's threads used during the run (`server_cpu_ms`), a
 * figure a loaded machine disturbs far less than throughput.
 */
#define _GNU_SOURCE
#define LOADGEN "loadgen"
#include "loadgen.h"
#include <fcntl.h>
#include <netinet/tcp.h>
#include <sys/time.h>
#include <unistd.h>

#define CHUNK 65536

static uint8_t pattern[PERIOD + CHUNK];

static int open_conn(int blocking) {
  int fd = socket(AF_INET, SOCK_STREAM | (blocking ? 0 : SOCK_NONBLOCK), 0);
  if (fd < 0) die("socket");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr *)&server, sizeof server) < 0 &&
      errno != EINPROGRESS)
    die("connect");
  return fd;
}

struct conn {
  int fd;
  uint64_t sent, received;
  double started;
  int want_out;
};

static void watch(int ep, struct conn *c, int out) {
  epoll_watch(ep, c->fd, c, &c->want_out, out);
}

static int stream(int conns, double seconds) {
  int ep = epoll_create1(0);
  struct conn *cs = calloc(conns, sizeof *cs);
  static uint8_t buf[CHUNK];
  for (int i = 0; i < conns; i++) {
    cs[i].fd = open_conn(0);
    cs[i].want_out = -1;
    cs[i].sent = cs[i].received = (uint64_t)i * 17; /* per-connection phase */
    watch(ep, &cs[i], 1);
  }
  struct epoll_event evs[256];
  double cpu = server_cpu(), start = now(), end = start + seconds;
  uint64_t base = 0;
  for (int i = 0; i < conns; i++) base += cs[i].received;
  while (now() < end) {
    int n = epoll_wait(ep, evs, 256, 100);
    for (int e = 0; e < n; e++) {
      struct conn *c = evs[e].data.ptr;
      if (evs[e].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        ssize_t r = read(c->fd, buf, sizeof buf);
        if (r == 0 || (r < 0 && errno != EAGAIN)) {
          fprintf(stderr, "loadgen: stream: server closed a connection\n");
          return 1;
        }
        if (r > 0) {
          if (memcmp(buf, pattern + c->received % PERIOD, r) != 0) {
            fprintf(stderr, "loadgen: stream: echoed bytes differ at offset %llu\n",
                    (unsigned long long)c->received);
            return 1;
          }
          c->received += r;
        }
      }
      if (evs[e].events & EPOLLOUT || c->sent - c->received < WINDOW) {
        uint64_t room = WINDOW - (c->sent - c->received);
        if (room > CHUNK) room = CHUNK;
        if (room > 0) {
          ssize_t w = write(c->fd, pattern + c->sent % PERIOD, room);
          if (w > 0) c->sent += w;
          else if (w < 0 && errno != EAGAIN) die("write");
        }
      }
      int out = c->sent - c->received < WINDOW;
      if (out != c->want_out) watch(ep, c, out);
    }
  }
  double elapsed = now() - start;
  uint64_t total = 0;
  for (int i = 0; i < conns; i++) total += cs[i].received;
  total -= base;
  cpu = server_cpu() - cpu;
  printf("{\"scenario\":\"stream\",\"connections\":%d,\"seconds\":%.3f,"
         "\"bytes\":%llu,\"mb_per_s\":%.1f,\"verified\":true,\"server_cpu_ms\":%.1f}\n",
         conns, elapsed, (unsigned long long)total, total / elapsed / 1e6, cpu * 1e3);
  return 0;
}

static int pingpong(int conns, double seconds) {
  int ep = epoll_create1(0);
  struct conn *cs = calloc(conns, sizeof *cs);
  size_t cap = 1 << 20, count = 0;
  double *lat = malloc(cap * sizeof *lat);
  uint8_t req[MSG], buf[MSG * 4];
  for (int i = 0; i < MSG; i++) req[i] = 'a' + i % 26;
  for (int i = 0; i < conns; i++) {
    cs[i].fd = open_conn(0);
    cs[i].want_out = -1;
    watch(ep, &cs[i], 1);
  }
  struct epoll_event evs[256];
  double cpu = server_cpu(), start = now(), end = start + seconds;
  uint64_t trips = 0;
  int stopping = 0;
  while (!stopping) {
    int n = epoll_wait(ep, evs, 256, 100);
    double t = now();
    if (t >= end) break;
    for (int e = 0; e < n; e++) {
      struct conn *c = evs[e].data.ptr;
      if (c->want_out && (evs[e].events & EPOLLOUT)) {
        c->started = now();
        ssize_t w = write(c->fd, req, MSG);
        if (w != MSG) die("write");
        c->received = 0;
        watch(ep, c, 0);
        continue;
      }
      if (evs[e].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        ssize_t r = read(c->fd, buf + c->received, MSG - c->received);
        if (r == 0 || (r < 0 && errno != EAGAIN)) {
          fprintf(stderr, "loadgen: pingpong: server closed a connection\n");
          return 1;
        }
        if (r < 0) continue;
        c->received += r;
        if (c->received < MSG) continue;
        if (memcmp(buf, req, MSG) != 0) {
          fprintf(stderr, "loadgen: pingpong: wrong reply\n");
          return 1;
        }
        double done = now();
        if (count == cap) lat = realloc(lat, (cap *= 2) * sizeof *lat);
        lat[count++] = done - c->started;
        trips++;
        /* Next request at once: the socket is writable, it was just read. */
        c->started = done;
        if (write(c->fd, req, MSG) != MSG) die("write");
        c->received = 0;
      }
    }
  }
  double elapsed = now() - start;
  cpu = server_cpu() - cpu;
  double p50, p99;
  percentiles(lat, count, &p50, &p99);
  printf("{\"scenario\":\"pingpong\",\"connections\":%d,\"seconds\":%.3f,"
         "\"round_trips\":%llu,\"per_s\":%.0f,\"p50_us\":%.1f,\"p99_us\":%.1f,"
         "\"server_cpu_ms\":%.1f}\n",
         conns, elapsed, (unsigned long long)trips, trips / elapsed, p50 * 1e6,
         p99 * 1e6, cpu * 1e3);
  return 0;
}


#define UDP_TIMEOUT 0.020 /* s: a datagram not answered by then is lost */

/*
 * UDP ping-pong from `socks` connected sockets: each sends a 64-byte
 * datagram carrying its socket and sequence number (so every datagram
 * differs), waits for it back, verifies it and sends the next. A reply
 * that never comes (a server that drops it, a rate limit) is counted lost
 * after UDP_TIMEOUT and a new datagram goes; one that comes late is
 * ignored. A reply that carries the awaited number but other bytes fails.
 */
static int udp_pingpong(int socks, double seconds) {
  int ep = epoll_create1(0);
  int *fds = calloc(socks, sizeof *fds);
  uint64_t *seq = calloc(socks, sizeof *seq);
  double *sent = calloc(socks, sizeof *sent);
  size_t cap = 1 << 20, count = 0;
  double *lat = malloc(cap * sizeof *lat);
  uint8_t req[MSG], buf[MSG * 4];
  uint64_t trips = 0, lost = 0, late = 0;
  for (int i = 0; i < socks; i++) {
    fds[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    if (fds[i] < 0) die("socket");
    if (connect(fds[i], (struct sockaddr *)&server, sizeof server) < 0) die("connect");
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
    epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
  }
  /* The datagram of socket i, sequence s: its numbers, then a pattern of them. */
#define FILL(i, s)                                                    \
  do {                                                                \
    uint64_t v = (s), k = (i);                                        \
    memcpy(req, &v, 8);                                               \
    memcpy(req + 8, &k, 8);                                           \
    for (int b = 16; b < MSG; b++) req[b] = (uint8_t)(v * 31 + k * 7 + b); \
  } while (0)
  double cpu = server_cpu(), start = now(), end = start + seconds;
  for (int i = 0; i < socks; i++) {
    FILL(i, seq[i]);
    sent[i] = now();
    send(fds[i], req, MSG, 0);
  }
  struct epoll_event evs[256];
  double next_check = start + UDP_TIMEOUT;
  for (;;) {
    int n = epoll_wait(ep, evs, 256, 5);
    double t = now();
    if (t >= end) break;
    for (int e = 0; e < n; e++) {
      int i = evs[e].data.u32;
      for (;;) {
        ssize_t r = recv(fds[i], buf, sizeof buf, 0);
        if (r < 0) break; /* EAGAIN, or ECONNREFUSED: counted as lost */
        uint64_t got;
        memcpy(&got, buf, 8);
        if (r < 8 || got != seq[i]) {
          late++;
          continue;
        }
        FILL(i, seq[i]);
        if (r != MSG || memcmp(buf, req, MSG) != 0) {
          fprintf(stderr, "loadgen: udp: wrong reply\n");
          return 1;
        }
        double done = now();
        if (count == cap) lat = realloc(lat, (cap *= 2) * sizeof *lat);
        lat[count++] = done - sent[i];
        trips++;
        FILL(i, ++seq[i]);
        sent[i] = done;
        send(fds[i], req, MSG, 0);
      }
    }
    if (t >= next_check) {
      for (int i = 0; i < socks; i++) {
        if (t - sent[i] < UDP_TIMEOUT) continue;
        lost++;
        FILL(i, ++seq[i]);
        sent[i] = t;
        send(fds[i], req, MSG, 0);
      }
      next_check = t + UDP_TIMEOUT / 4;
    }
  }
#undef FILL
  double elapsed = now() - start;
  cpu = server_cpu() - cpu;
  double p50, p99;
  percentiles(lat, count, &p50, &p99);
  printf("{\"scenario\":\"udp\",\"sockets\":%d,\"seconds\":%.3f,"
         "\"round_trips\":%llu,\"per_s\":%.0f,\"lost\":%llu,\"late\":%llu,"
         "\"p50_us\":%.1f,\"p99_us\":%.1f,\"server_cpu_ms\":%.1f}\n",
         socks, elapsed, (unsigned long long)trips, trips / elapsed,
         (unsigned long long)lost, (unsigned long long)late, p50 * 1e6,
         p99 * 1e6, cpu * 1e3);
  return 0;
}

/* Closes `c` and opens a new connection in its place, watched for `out`. */
static void reconnect(int ep, struct conn *c, int out) {
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  c->fd = open_conn(0);
  c->sent = 0;
  c->received = 0;
  c->want_out = -1;
  watch(ep, c, out);
}

/* Prints a connection scenario's figures; fails past 1% failures. */
static int report_rate(const char *scenario, int conns, double start,
                       double cpu, uint64_t done, uint64_t bad) {
  double elapsed = now() - start;
  cpu = server_cpu() - cpu;
  printf("{\"scenario\":\"%s\",\"connections\":%d,\"seconds\":%.3f,"
         "\"completed\":%llu,\"failed\":%llu,\"per_s\":%.0f,\"server_cpu_ms\":%.1f}\n",
         scenario, conns, elapsed, (unsigned long long)done,
         (unsigned long long)bad, done / elapsed, cpu * 1e3);
  return bad > done / 100 ? 1 : 0;
}

static int connect_bench(int conns, double seconds) {
  int ep = epoll_create1(0);
  struct conn *cs = calloc(conns, sizeof *cs);
  uint8_t buf[256];
  for (int i = 0; i < conns; i++) {
    cs[i].fd = open_conn(0);
    cs[i].want_out = -1;
    cs[i].received = 0;
    watch(ep, &cs[i], 0);
  }
  struct epoll_event evs[256];
  double cpu = server_cpu(), start = now(), end = start + seconds;
  uint64_t done = 0, bad = 0;
  while (now() < end) {
    int n = epoll_wait(ep, evs, 256, 100);
    for (int e = 0; e < n; e++) {
      struct conn *c = evs[e].data.ptr;
      ssize_t r = read(c->fd, buf + c->received, sizeof buf - c->received);
      if (r < 0 && errno == EAGAIN) continue;
      if (r > 0) {
        c->received += r;
        if (c->received < sizeof buf) continue;
      }
      /* EOF (or an error): one connection done. */
      if (r < 0 || c->received < 3 || buf[c->received - 2] != '\r' ||
          buf[c->received - 1] != '\n') {
        if (bad++ == 0)
          fprintf(stderr, "loadgen: connect: first failure: %s (%d bytes)\n",
                  r < 0 ? strerror(errno) : "bad line", (int)c->received);
      } else
        done++;
      reconnect(ep, c, 0);
    }
  }
  return report_rate("connect", conns, start, cpu, done, bad);
}

/*
 * Short connections: connect, send 64 bytes, read them back, close; CONNS
 * at a time. What a health check or a request/response protocol costs.
 */
static int short_bench(int conns, double seconds) {
  int ep = epoll_create1(0);
  struct conn *cs = calloc(conns, sizeof *cs);
  uint8_t buf[MSG];
  for (int i = 0; i < conns; i++) {
    cs[i].fd = open_conn(0);
    cs[i].want_out = -1;
    cs[i].sent = 0;
    cs[i].received = 0;
    watch(ep, &cs[i], 1);
  }
  struct epoll_event evs[256];
  double cpu = server_cpu(), start = now(), end = start + seconds;
  uint64_t done = 0, bad = 0;
  while (now() < end) {
    int n = epoll_wait(ep, evs, 256, 100);
    for (int e = 0; e < n; e++) {
      struct conn *c = evs[e].data.ptr;
      int failed = 0;
      if (c->sent == 0) {
        /* Connected (or refused): send the request. */
        if (evs[e].events & (EPOLLERR | EPOLLHUP)) failed = 1;
        else if (write(c->fd, pattern, MSG) != MSG) failed = 1;
        else {
          c->sent = MSG;
          watch(ep, c, 0);
          continue;
        }
      } else {
        ssize_t r = read(c->fd, buf + c->received, MSG - c->received);
        if (r < 0 && errno == EAGAIN) continue;
        if (r > 0) {
          c->received += r;
          if (c->received < MSG) continue;
          if (memcmp(buf, pattern, MSG) != 0) failed = 1;
        } else
          failed = 1;
      }
      if (failed) {
        if (bad++ == 0)
          fprintf(stderr, "loadgen: short: first failure: %s (%d bytes)\n",
                  strerror(errno), (int)c->received);
      } else
        done++;
      reconnect(ep, c, 1);
    }
  }
  return report_rate("short", conns, start, cpu, done, bad);
}

static long rss_kib(int pid) {
  char path[64], line[256];
  long kib = -1;
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  FILE *f = fopen(path, "r");
  if (!f) die("open /proc/PID/status");
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %ld", &kib) == 1) break;
  fclose(f);
  return kib;
}

static int idle(int conns, int pid) {
  int *fds = calloc(conns, sizeof *fds);
  uint8_t b = 'x', r;
  long before = rss_kib(pid);
  for (int i = 0; i < conns; i++) {
    /* Blocking, one at a time: a round trip proves the server took it. */
    fds[i] = open_conn(1);
    struct timeval limit = {.tv_sec = 10};
    setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    if (write(fds[i], &b, 1) != 1 || read(fds[i], &r, 1) != 1 || r != b) {
      fprintf(stderr, "loadgen: idle: connection %d got no echo\n", i);
      return 1;
    }
  }
  usleep(500 * 1000);
  long after = rss_kib(pid);
  printf("{\"scenario\":\"idle\",\"connections\":%d,\"rss_before_kib\":%ld,"
         "\"rss_after_kib\":%ld,\"bytes_per_connection\":%.0f}\n",
         conns, before, after, (after - before) * 1024.0 / conns);
  for (int i = 0; i < conns; i++) close(fds[i]);
  return 0;
}

int main(int argc, char **argv) {
  int code = start(argc, argv,
                   "usage: loadgen stream|pingpong|connect|short|idle|udp HOST PORT CONNS SECONDS|PID [SERVER_PID]");
  if (code != 0) return code;
  for (size_t i = 0; i < sizeof pattern; i++) pattern[i] = (i % PERIOD) * 7 + 3;
  int conns = atoi(argv[4]);
  if (!strcmp(argv[1], "stream")) return stream(conns, atof(argv[5]));
  if (!strcmp(argv[1], "pingpong")) return pingpong(conns, atof(argv[5]));
  if (!strcmp(argv[1], "connect")) return connect_bench(conns, atof(argv[5]));
  if (!strcmp(argv[1], "short")) return short_bench(conns, atof(argv[5]));
  if (!strcmp(argv[1], "idle")) return idle(conns, atoi(argv[5]));
  if (!strcmp(argv[1], "udp")) return udp_pingpong(conns, atof(argv[5]));
  fprintf(stderr, "loadgen: unknown scenario %s\n", argv[1]);
  return 2;
}
