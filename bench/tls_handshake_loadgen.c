/*
 * TLS handshake load generator for `deno task bench --family handshake`
 * (bench/tls_handshake.ts), in C with OpenSSL so that the client is not
 * what limits the figure. CONNS clients at a time, each in a thread of its
 * own, each doing again and again until SECONDS are up: connect, a full
 * handshake (a new SSL every time, no session cache, no tickets: never a
 * resumption), the server's certificate verified against CA for the name
 * localhost, one byte out, the same byte back, close_notify, close. With
 * CERT and KEY it presents that client certificate.
 *
 *   tls_handshake_loadgen PORT CONNS SECONDS CA [SERVER_PID [CERT KEY]]
 *
 * Prints one JSON object: handshakes done, seconds, per_s, p50_us (one
 * connection's whole life), server_cpu_ms (SERVER_PID's CPU time, every
 * thread's, from /proc/PID/stat). Exits 1 with one line on stderr when a connection fails
 * or a byte comes back wrong.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SAMPLES 200000

static int port;
static double seconds;
static SSL_CTX *ctx;
static atomic_int stop;
static atomic_long done;
static long *samples; /* microseconds per connection, by completion */
static atomic_long sampled;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void fail(const char *what) {
  unsigned long code = ERR_get_error();
  char reason[256] = "";
  if (code) ERR_error_string_n(code, reason, sizeof reason);
  fprintf(stderr, "tls_handshake_loadgen: %s%s%s\n", what, code ? ": " : "",
          reason);
  exit(1);
}

/*
 * CPU seconds `pid` used so far, its threads that ended included (stunnel
 * runs a thread per connection): utime + stime of /proc/PID/stat, in clock
 * ticks (10 ms: a few per cent of a measurement). 0 without a pid.
 */
static double server_cpu(const char *pid) {
  if (!pid) return 0;
  char path[64], text[1024];
  snprintf(path, sizeof path, "/proc/%s/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  size_t n = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  text[n] = 0;
  /* Fields after the command name, which may hold spaces: 3 is state. */
  char *at = strrchr(text, ')');
  if (!at) return 0;
  unsigned long long utime = 0, stime = 0;
  if (sscanf(at + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
             &utime, &stime) != 2) {
    return 0;
  }
  return (double)(utime + stime) / sysconf(_SC_CLK_TCK);
}

/* One connection's whole life; fails the run on any error. */
static void one(void) {
  double started = now();
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) fail("socket");
  int on = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) fail("connect");
  SSL *ssl = SSL_new(ctx);
  if (!ssl) fail("SSL_new");
  SSL_set_fd(ssl, fd);
  SSL_set_tlsext_host_name(ssl, "localhost");
  SSL_set1_host(ssl, "localhost");
  if (SSL_connect(ssl) != 1) fail("handshake");
  unsigned char out = 'x', in = 0;
  if (SSL_write(ssl, &out, 1) != 1) fail("write");
  if (SSL_read(ssl, &in, 1) != 1) fail("read (no echo)");
  if (in != out) fail("the byte came back wrong");
  SSL_shutdown(ssl);
  SSL_free(ssl);
  close(fd);
  if (atomic_load(&stop)) return;
  atomic_fetch_add(&done, 1);
  long at = atomic_fetch_add(&sampled, 1);
  if (at < MAX_SAMPLES) samples[at] = (long)((now() - started) * 1e6);
}

static void *client(void *unused) {
  (void)unused;
  while (!atomic_load(&stop)) one();
  return NULL;
}

static int by_value(const void *a, const void *b) {
  long x = *(const long *)a, y = *(const long *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  if (argc < 5 || argc == 7 || argc > 8) {
    fprintf(stderr,
            "usage: tls_handshake_loadgen PORT CONNS SECONDS CA "
            "[SERVER_PID [CERT KEY]]\n");
    return 2;
  }
  port = atoi(argv[1]);
  int conns = atoi(argv[2]);
  seconds = atof(argv[3]);
  const char *pid = argc > 5 ? argv[5] : NULL;
  if (pid && !*pid) pid = NULL;
  samples = calloc(MAX_SAMPLES, sizeof *samples);
  ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) fail("SSL_CTX_new");
  if (SSL_CTX_load_verify_locations(ctx, argv[4], NULL) != 1) fail("CA file");
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
  if (argc == 8) {
    if (SSL_CTX_use_certificate_chain_file(ctx, argv[6]) != 1) fail("CERT");
    if (SSL_CTX_use_PrivateKey_file(ctx, argv[7], SSL_FILETYPE_PEM) != 1) {
      fail("KEY");
    }
  }
  /* One handshake first: a server that refuses fails here, not mid-run. */
  one();
  atomic_store(&done, 0);
  atomic_store(&sampled, 0);
  pthread_t threads[conns];
  double cpu_before = server_cpu(pid);
  double started = now();
  for (int i = 0; i < conns; i++) {
    pthread_create(&threads[i], NULL, client, NULL);
  }
  while (now() - started < seconds) usleep(10000);
  atomic_store(&stop, 1);
  double elapsed = now() - started;
  double cpu_after = server_cpu(pid);
  for (int i = 0; i < conns; i++) pthread_join(threads[i], NULL);
  long n = atomic_load(&done);
  long kept = n < MAX_SAMPLES ? n : MAX_SAMPLES;
  qsort(samples, kept, sizeof *samples, by_value);
  printf("{\"handshakes\": %ld, \"seconds\": %.3f, \"per_s\": %.1f, "
         "\"p50_us\": %ld",
         n, elapsed, n / elapsed, kept ? samples[kept / 2] : 0);
  if (pid) printf(", \"server_cpu_ms\": %.1f", (cpu_after - cpu_before) * 1e3);
  printf("}\n");
  return 0;
}
