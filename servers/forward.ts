/**
 * TCP, Unix and UDP forwarder, from the seed's "Connecting to a remote
 * host", on both sides: `forward.ts LISTEN TARGET` accepts clients on
 * LISTEN and gives each one its own connection to TARGET (resolved and
 * dialled for that client, by Happy Eyeballs), then copies bytes both ways
 * until both sides are done. What socat's `TCP-LISTEN:...,fork TCP:...`
 * and haproxy's `mode tcp` are most used for. With a backend on 15000:
 *
 * ```sh
 * $ socat TCP-LISTEN:15000,bind=127.0.0.1,reuseaddr,fork EXEC:cat &
 * $ deno run --allow-net=0.0.0.0:8080,127.0.0.1:15000 servers/forward.ts \
 *     tcp://0.0.0.0:8080 tcp://127.0.0.1:15000 &
 * listening on 0.0.0.0:8080
 * $ echo hi | socat - TCP:127.0.0.1:8080
 * hi
 * ...
 * $ deno install -g -f -n sock-forward --config=deno.json --allow-net=0.0.0.0:8080,127.0.0.1:15000 servers/forward.ts
 * ...
 * ```
 *
 * The figures, for Prometheus and a live page at `/` (`--stats`: off by
 * default, with a permission of its own; see `lib/stats_server.ts`):
 *
 * ```sh
 * $ deno run --allow-net=0.0.0.0:8080,127.0.0.1:15000,127.0.0.1:15001,127.0.0.1:9100 \
 *     servers/forward.ts --stats 127.0.0.1:9100 \
 *     tcp://0.0.0.0:8080 tcp://127.0.0.1:15000 tcp://127.0.0.1:15001 &
 * stats on http://127.0.0.1:9100/
 * listening on 0.0.0.0:8080
 * $ curl -s 127.0.0.1:9100/metrics | grep '^sockets_target_up'
 * sockets_target_up{service="forward",target="tcp://127.0.0.1:15000"} 1
 * sockets_target_up{service="forward",target="tcp://127.0.0.1:15001"} 1
 * ```
 *
 * The permissions are exactly the listen address and the target; a target
 * by name needs only NAME:PORT (`--allow-net=0.0.0.0:8080,backend.example:80`
 * for `tcp://backend.example:80`: Deno then resolves it and races its
 * addresses itself). What each socat or haproxy line becomes (arguments of
 * `servers/forward.ts`; permissions as above, plus `--allow-read` and
 * `--allow-write` of a Unix socket path, `--allow-read` of TLS files):
 *
 * | socat / haproxy | forward.ts |
 * | --- | --- |
 * | `socat TCP-LISTEN:8080,fork,reuseaddr TCP:127.0.0.1:15000` | `tcp://0.0.0.0:8080 tcp://127.0.0.1:15000` |
 * | `socat TCP-LISTEN:2375,bind=127.0.0.1,fork UNIX-CONNECT:/var/run/docker.sock` | `tcp://127.0.0.1:2375 unix:/var/run/docker.sock` |
 * | `socat UNIX-LISTEN:/tmp/db.sock,fork TCP:127.0.0.1:5432` | `unix:/tmp/db.sock tcp://127.0.0.1:5432` |
 * | `socat UDP-LISTEN:5353,fork UDP:127.0.0.1:53` | `udp://0.0.0.0:5353 udp://127.0.0.1:53` (`--unstable-net --allow-net`: answers go to whoever asked) |
 * | `socat OPENSSL-LISTEN:8443,fork,cert=cert.pem,key=key.pem,verify=0 TCP:127.0.0.1:8080`; haproxy `bind :8443 ssl crt site.pem` | `--tls --cert cert.pem --key key.pem tcp://0.0.0.0:8443 tcp://127.0.0.1:8080` |
 * | `socat TCP-LISTEN:8080,fork OPENSSL:example.com:443` | `--to-tls tcp://127.0.0.1:8080 tcp://example.com:443` |
 * | `socat OPENSSL-LISTEN:8443,fork,cert=cert.pem,key=key.pem,cafile=ca.pem,verify=1 TCP:127.0.0.1:8080`; haproxy `bind :8443 ssl crt site.pem verify required ca-file ca.pem` | `--tls --cert cert.pem --key key.pem --client-ca ca.pem tcp://0.0.0.0:8443 tcp://127.0.0.1:8080` (mutual TLS; `--client-cert optional` for haproxy's `verify optional`) |
 * | `socat TCP-LISTEN:8080,fork OPENSSL:db.internal:5432,cert=client.pem,key=client.key,cafile=ca.pem`; haproxy `server s db.internal:5432 ssl crt client.pem ca-file ca.pem` | `--to-tls --ca ca.pem --to-cert client.pem --to-key client.key tcp://127.0.0.1:8080 tcp://db.internal:5432` |
 * | haproxy `server s 127.0.0.1:8080 send-proxy-v2` | `--send-proxy v2 tcp://0.0.0.0:80 tcp://127.0.0.1:8080` |
 * | haproxy `bind :80 accept-proxy` | `--accept-proxy tcp://0.0.0.0:80 tcp://127.0.0.1:8080` |
 * | `websockify 8080 127.0.0.1:5900` | `ws://0.0.0.0:8080/ tcp://127.0.0.1:5900` |
 * | `websockify --cert c.pem --key k.pem --web DIR 8443 127.0.0.1:5900` | `--tls --cert c.pem --key k.pem --web DIR wss://0.0.0.0:8443/ tcp://127.0.0.1:5900` (`--allow-read=DIR` too) |
 * | `websocat -b tcp-l:127.0.0.1:9000 wss://host/path` | `tcp://127.0.0.1:9000 wss://host/path` (`--allow-net=...,host:443`) |
 *
 * (UDP for clients on this host only: `--allow-net=127.0.0.1,0.0.0.0:0` and
 * `udp://127.0.0.1:5353`: the session sockets bind `0.0.0.0:0`.)
 *
 * Both directions are byte-exact and end on their own: a client that shuts
 * down its writing still gets the target's whole answer, and the reverse.
 * A side that does not read stops the other being read (one buffer per
 * direction, no queue); a side that resets meanwhile is still noticed,
 * within 1 to 2 s (its socket, unread, is checked each second with a write
 * of zero bytes), and ends the pair. A side that closes without a reset (a
 * FIN) has half-closed, as far as anyone can tell: the other direction goes
 * on until it ends (bound it with `--idle-timeout`). A side that resets
 * has the other side's connection reset too, so that a client sees its
 * target's reset (and a target its client's) as it would without a
 * forwarder in between; this takes FFI access to libc, as tuned
 * `--keepalive` does (`--allow-ffi=/lib/x86_64-linux-gnu/libc.so.6` on
 * Debian and Ubuntu), since Deno's own close always sends a FIN first.
 * Without it the other side is closed with a FIN, as haproxy closes it
 * (socat half-closes it and goes on reading), and only the log line says
 * `target reset`. A target that refuses, is not found or does not
 * answer within `--connect-timeout` closes that client, with one log line;
 * the server carries on. Each connection logs one line when accepted and
 * one when it ends: the client, bytes each way, the target address used,
 * how long it lasted and why it ended, e.g. `closed 127.0.0.1:41234 (5
 * bytes in, 5 bytes out) to 127.0.0.1:15000, 0.004 s, client closed first`.
 *
 * UDP: each client address gets a session (a socket of its own towards
 * TARGET, so answers go back to the client that asked) that ends once idle
 * for `--udp-session-timeout`; `--max-connections` bounds the sessions,
 * and `--per-source` those of one client address (default
 * `DEFAULT_UDP_SESSIONS_PER_SOURCE`, 64: one host using many source
 * ports cannot take them all); no datagram from a source port below 1024 is forwarded
 * (`--allow-low-ports`), answers to one client address are limited by
 * `--udp-rate`, and a client that sends each answer straight back, round
 * after round faster than that (an echo server: a loop), is dropped by
 * the loop guard, as every UDP server here does.
 *
 * ## WebSocket
 *
 * A `ws://HOST:PORT/PATH` LISTEN (`wss://` with `--tls --cert --key`) is a
 * WebSocket bridge, websockify's job (`lib/websocket_bridge.ts`, its own
 * RFC 6455 server on the stream server every listener here uses): each
 * browser or WebSocket client that upgrades on PATH (any path for `/`) is
 * joined to its own connection to TARGET, bytes both ways: binary frames
 * (`--ws-frames text` for text frames; a client offering the `base64`
 * subprotocol, as noVNC and old websockify clients do, gets base64). The
 * common flags apply as to a tcp:// LISTEN: `--allow`/`--deny` (a refused
 * client gets 403), `--per-source` and `--max-connections` (503), all
 * before anything is read (over TLS: closed before the handshake, as any
 * TLS listener does), `--accept-proxy`, `--client-ca` with `wss://`,
 * `--idle-timeout`, `--keepalive`, `--stats`. Then each request meets
 * `--origin` (403 for a page of another site: without it any page a user
 * visits can reach TARGET through the user's browser), and a TARGET that
 * is down is a 502. A client that answers no ping for `--ping` seconds,
 * or sends a message larger than `--max-message`, is closed; the closing
 * line gives the close code and reason: `closed 127.0.0.1:41234 (5 bytes
 * in, 5 bytes out) to 127.0.0.1:5900, 2.1 s, client closed first (1000
 * bye)`. `--web DIR` serves the files under DIR to other requests, so a
 * page and its socket come from one origin. `--workers N` serves it on N
 * threads, as any TCP listener (one TARGET only).
 *
 * A `ws://` or `wss://` TARGET carries each TCP client over a WebSocket
 * of its own, websocat's job (`lib/websocket_dial.ts`): binary messages,
 * the server's certificate verified for the URL's host against Deno's
 * roots and `--ca FILE`'s (added to them). WebSocket has no half-close: a
 * client's end becomes a close frame once TARGET has been quiet for 1 s.
 *
 * ## PROXY protocol
 *
 * A forwarder hides the client's address from the target: the target sees
 * the forwarder's. haproxy's PROXY protocol (`doc/proxy-protocol.txt` in
 * haproxy's sources) puts a header in front of the connection that carries
 * it. `--send-proxy v1` writes the text header (`PROXY TCP4 192.0.2.1
 * 198.51.100.7 51234 80\r\n`), `--send-proxy v2` the binary one, before
 * anything else (before TLS with `--to-tls`), as haproxy's `send-proxy` and
 * `send-proxy-v2`. `--accept-proxy`, which every stream server here takes
 * (the server core reads the header: the README's "PROXY protocol"),
 * requires one (either version) from each client, within `--proxy-timeout`
 * (5 s) and at most 4 KiB, before TLS with `--tls`: a missing or bad header
 * closes the connection with a log line, and from then on the log lines,
 * `--allow`/`--deny` and `--per-source` use the client address it carries
 * (a header that carries none, v1 `UNKNOWN` or v2 `LOCAL`, leaves the
 * connection's own), e.g. `closed 127.0.0.1:41234 (5 bytes in, 5 bytes
 * out) for 203.0.113.7:5555 (PROXY v1) to 127.0.0.1:15000, 0.004 s, client
 * closed first`. Chained, a forwarder with `--accept-proxy --send-proxy`
 * passes the original client on (and the address it reached). Accept
 * headers only from your own proxies: anyone who can send one picks the
 * address you will believe, so listen where only they can reach.
 *
 * ## Many targets
 *
 * `forward.ts LISTEN TARGET TARGET...` (any mix of `tcp://` and `unix:`;
 * all `tcp://` with `--to-tls`; all `udp://` behind a `udp://` LISTEN) or
 * `--targets FILE` (one target a line, `TARGET [weight=N] [backup]
 * [drain] [tls]`, `#` comments) spreads the clients over the targets, as
 * haproxy's `backend` and nginx's `upstream` do:
 *
 * | haproxy / nginx | forward.ts |
 * | --- | --- |
 * | `backend b` + `balance roundrobin` + `server s1 10.0.0.1:80 weight 3` + `server s2 10.0.0.2:80`; nginx `upstream b { server 10.0.0.1:80 weight=3; server 10.0.0.2:80; }` | `--targets FILE` with `10.0.0.1:80 weight=3` and `10.0.0.2:80` |
 * | `balance leastconn`; nginx `least_conn;` | `--balance leastconn` |
 * | `balance source` + `hash-type consistent`; nginx `hash $remote_addr consistent;` | `--balance source` |
 * | `balance random(2)`; nginx `random two least_conn;` | `--balance random` |
 * | `server s3 10.0.0.3:80 backup`; nginx `server 10.0.0.3:80 backup;` | `10.0.0.3:80 backup` in FILE |
 * | `server s4 10.0.0.4:443 ssl ca-file ca.pem` beside plain `server` lines | `10.0.0.4:443 tls` in FILE, `--ca ca.pem` |
 * | `retries 2` + `option redispatch`; nginx `proxy_next_upstream on; proxy_next_upstream_tries 3;` | `--retries 2` (the default) |
 * | `retry-on conn-failure empty-response` (HTTP mode only); nginx `proxy_next_upstream error non_idempotent;` (HTTP only) | `--retry-unanswered` |
 * | `server ... check inter 1s fall 3 rise 2`; | `--check-interval 1 --fall 3 --rise 2` |
 * | `option tcp-check` + `tcp-check send PING\r\n` + `tcp-check expect string PONG` | `--check-send PING --check-expect PONG` |
 * | `set server b/s1 state drain` (runtime API) | `drain` in FILE, then `kill -HUP` |
 *
 * - **Rules** (`--balance`): `roundrobin` (the default: in turn, by
 *   weight, spread out as nginx's smooth weighted round robin), `leastconn`
 *   (the fewest clients in flight for its weight), `source` (a client
 *   address always lands on the same live target; rendezvous hashing, so a
 *   new target takes about 1/N of the clients and a target going down moves
 *   only its own), `random` (two drawn, the less loaded taken). Backup
 *   targets take clients only when no other target is up.
 * - **Passive health**: a target whose connect fails (refused, timed out
 *   after `--connect-timeout`, TLS failed) `--fall` times in a row (3) is
 *   down, and each such client is tried on the next target, up to
 *   `--retries` (2) more: a dead target costs a client at most the connect
 *   timeout, never its connection. A down target is probed (a connect)
 *   every 2 s and is back after `--rise` (2) successes. UDP: a target
 *   that answers ICMP port unreachable (nothing listens there) counts a
 *   failure for each session that meets it (`target 10.0.0.2:53 down:
 *   port unreachable (3 datagrams refused)`), and the session's next
 *   datagram, the one that found it out, goes to another target (the
 *   datagram refused is lost, as UDP loses datagrams; the client's retry
 *   is answered). Deno's UDP sockets never hear of it: the sessions'
 *   sockets are connected to their target through libc for it, which
 *   takes `--allow-ffi` for libc (without it, one line says that only
 *   active checks notice).
 * - **Clients in flight** (`--retry-unanswered`, off by default): a
 *   client already joined to a target that dies (resets, or closes) before
 *   its first byte back is not failed: that counts against the target as
 *   a failed connect does (`target 10.0.0.2:80 down: closed without
 *   answering (3 clients unanswered)`), and the bytes the client sent so
 *   far (kept until the first byte back, at most 16 KiB: a longer request
 *   is not retried) go to the next target, within `--retries`; its line
 *   says `to 10.0.0.3:80 (after 10.0.0.2:80: closed without answering)`.
 *   haproxy does this for HTTP only (`retry-on empty-response`), for the
 *   same reason this is opt-in: **a target that dropped a request may
 *   have acted on it** (a row written, a mail sent) before it died, and
 *   the next one acts on it again; use it for requests that may be sent
 *   twice (reads, idempotent writes). A target that closes without an
 *   answer on purpose (a protocol whose server only reads) counts as
 *   failing: not for those. A client that sent nothing is never retried.
 * - **Active health**: `--check-interval S` connects to every target every
 *   S seconds (with `--to-tls`, TLS too); `--check-send LINE` writes LINE
 *   and CR LF, `--check-expect TEXT` needs TEXT in the answer within the
 *   check's time (the interval, at most `--connect-timeout`): a service
 *   that accepts and never answers is caught. A UDP target is checked only
 *   with `--check-send` (it answers only what it is sent).
 * - **TLS**: `--to-tls` speaks TLS to every target; to mix, mark the TLS
 *   ones `tls` in the targets file (no `--to-tls`), as haproxy marks a
 *   `server` line `ssl`: `--ca`, `--servername`, `--insecure`,
 *   `--to-cert` and `--to-key` apply to those, and their checks speak TLS
 *   too (a target whose certificate does not verify fails its checks).
 *   A command-line TARGET has no word for it: `--to-tls` keeps meaning
 *   every target, and a mixed pool is written in a file.
 * - **Logs**: every change of state is one line: `target 10.0.0.2:80 down:
 *   connection refused (3 connects), 2 of 3 up`, `target 10.0.0.2:80 up (2
 *   checks), 3 of 3 up`. No target up: each client is closed at once
 *   (`closed ... : no target up`), and `no target up:` is logged once a
 *   second, with a count, however many clients come.
 * - **Reload**: SIGHUP reads `--targets FILE` again: new targets start up,
 *   targets still listed keep their state and clients (so `source` keeps
 *   every client where it was), a removed target or one marked `drain`
 *   takes no new client and its open ones go on until they end (`target
 *   10.0.0.1:80 removed: draining 4 clients`, then `... removed
 *   (drained)`). A bad file is one `error:` line and changes nothing.
 *
 * Permissions: every target (`--allow-net=0.0.0.0:80,10.0.0.1:80,...`),
 * with `--targets` also `--allow-read=FILE` and every target a reload may
 * add. Not with `--workers` (each thread would keep its own pool).
 *
 * ## Certificates
 *
 * `--tls --client-ca ca.pem` takes only clients whose certificate chains
 * to `ca.pem` (haproxy's `verify required ca-file`, stunnel's `verify =
 * 2`); `--to-cert`/`--to-key` show the target a certificate of ours.
 * SIGHUP reads `--cert`, `--key`, `--client-ca`, `--ca`, `--to-cert` and
 * `--to-key` again: the connections after it get the new files, those in
 * flight go on; a file that cannot be read or a pair that does not match
 * is one `error:` line and the old files stay in use. A certbot renewal:
 * write the new files beside the old, rename them into place,
 * then `kill -HUP` (certbot's `--deploy-hook`).
 *
 * @module
 */

import {
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_UDP_RATE,
  type Endpoint,
  EndpointError,
  type EndpointKind,
  flag,
  flagsHelp,
  type FlagValues,
  formatBytes,
  formatEndpoint,
  MAX_SMALL_FILE_BYTES,
  parseCommandLine,
  parseEndpoint,
  positiveSecondsFlag,
  readCaFile,
  readTlsFiles,
  runMain,
  runServers,
  serve,
  type Server,
  serverFlags,
  type ServerFlagValues,
  type ServerOptions,
  serverOptionsFromFlags,
  stderrLog,
  UsageError,
  type WebSocketEndpoint,
} from "../mod.ts";
import { workerPlace } from "../lib/workers.ts";
import {
  BALANCE_FLAGS,
  balancingFromFlags,
  type ForwardBalanceOptions,
  refuseBalanceFlags,
  reloadTargetsOnHangup,
  type StartedTargetPool,
  startTargetPool,
  targetSpecs,
} from "../lib/balance.ts";
import {
  type BalanceRule,
  type FailureSource,
  PoolTarget,
  type Taken,
  type TakeOptions,
  TargetPool,
  type TargetPoolOptions,
  type TargetSpec,
} from "../lib/targets.ts";
import { readTargetsFile } from "../lib/targets_file.ts";
import { withStats } from "../lib/stats_server.ts";
import {
  forwardConnection,
  type ForwardPlan,
  type ForwardTlsOptions,
} from "../lib/forward.ts";
import { canCloseWithReset } from "../lib/keepalive.ts";
import {
  DEFAULT_MAX_REQUEST_HEAD_BYTES,
  DEFAULT_REQUEST_HEAD_TIMEOUT_MS,
} from "../lib/http_head.ts";
import {
  serveWebSocketBridge,
  type WebSocketListenOptions,
} from "../lib/websocket_bridge.ts";
import { forwardToWebSocket } from "../lib/websocket_dial.ts";
import {
  checkWebSocketTarget,
  WEBSOCKET_LISTEN_FLAGS,
  webSocketListenOptions,
} from "../lib/websocket_flags.ts";
import {
  SPLICE_BUFFER_BYTES,
  SPLICE_IDLE_BUFFER_BYTES,
} from "../lib/splice.ts";
import {
  DEFAULT_UDP_SESSION_TIMEOUT_MS,
  DEFAULT_UDP_SESSIONS,
  DEFAULT_UDP_SESSIONS_PER_SOURCE,
  MAX_DATAGRAM_BYTES,
  serveDatagramForward,
} from "../lib/udp_forward.ts";

export type {
  BalanceRule,
  FailureSource,
  ForwardBalanceOptions,
  ForwardTlsOptions,
  Taken,
  TakeOptions,
  TargetPoolOptions,
  TargetSpec,
  WebSocketListenOptions,
};
export { PoolTarget, TargetPool };

/** How long dialling TARGET (resolving included) may take, by default, in ms. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

/** Options for {@linkcode serveForward}: where to listen, as any server's, and more. */
export interface ForwardOptions extends ServerOptions {
  /**
   * Where each client goes: `tcp://HOST:PORT` (`[v6]` too) or `unix:PATH`
   * for a `tcp` or `unix` listener, `udp://HOST:PORT` for a `udp` one.
   */
  target?: Endpoint | string;
  /**
   * Many targets instead of `target`: each client goes to one of them, as
   * `balancing` says.
   */
  targets?: readonly (TargetSpec | Endpoint | string)[];
  /** With `targets`: the rule that picks one, and health. */
  balancing?: ForwardBalanceOptions;
  /**
   * Give up dialling the target (resolving and, with `targetTls`, the TLS
   * handshake included) after this long. Default 10000 ms.
   */
  connectTimeoutMs?: number;
  /**
   * Speak TLS to the target (a `tcp://` one). With `targets`: to every
   * one, unless some are marked `tls` (a `--targets` file's `tls`): then
   * to those only, the others plain.
   */
  targetTls?: ForwardTlsOptions;
  /**
   * How `reloadTls` (SIGHUP) reads `targetTls`'s files again (`--ca`,
   * `--to-cert`, `--to-key`): connections made after it use them; throws
   * when one cannot be read. Without it `targetTls` stays as given.
   */
  readTargetTls?: () => ForwardTlsOptions;
  /**
   * Write a PROXY protocol header of this version to the target first,
   * for the client (with `acceptProxy`, the one the client's own header
   * names).
   */
  sendProxy?: 1 | 2;
  /** UDP: a session idle this long ends. Default 30000 ms. */
  udpSessionTimeoutMs?: number;
  // UDP: `maxConnections` bounds the sessions, `perSource` those of one
  // source address (default DEFAULT_UDP_SESSIONS_PER_SOURCE).
  /**
   * A side that resets gets the other side's connection reset too (see
   * `ForwardPlan.passResets`), which takes FFI access to libc. Default:
   * on when that is granted (`canCloseWithReset`), else the other side
   * is closed with a FIN.
   */
  passResets?: boolean;
  /**
   * Listen for WebSocket clients (`ws://` LISTEN, `wss://` with `tls`)
   * instead of plain connections: see `lib/websocket_bridge.ts`.
   */
  websocket?: WebSocketListenOptions;
}

/** What {@linkcode serveForward} returns: a server, and its targets when many. */
export interface ForwardServer extends Server {
  /** The targets and their state (`update` takes a new list), when many. */
  readonly pool?: TargetPool;
}

/**
 * With `options.targets`: their pool, its checks to start with the server
 * (`lib/balance.ts`). Stream checks dial as clients do, TLS included (no
 * PROXY header: as haproxy's checks without `check-send-proxy`).
 */
function startPoolOf(options: ForwardOptions) {
  if (options.targets === undefined) return undefined;
  if (options.target !== undefined) {
    throw new TypeError("give target or targets, not both");
  }
  const udp = (options.transport ?? "tcp") === "udp";
  const specs = targetSpecs(options.targets, udp);
  const connectTimeoutMs = options.connectTimeoutMs ??
    DEFAULT_CONNECT_TIMEOUT_MS;
  return startTargetPool(specs, {
    // targetTls with no target marked TLS: every one speaks it (--to-tls).
    tls: options.targetTls !== undefined && !specs.some((spec) => spec.tls),
    balancing: options.balancing,
    plan: udp ? undefined : {
      target: specs[0].endpoint,
      connectTimeoutMs,
      targetTls: options.targetTls,
    },
    connectTimeoutMs,
    log: options.log,
    label: options.label,
  });
}

function targetOf(options: ForwardOptions): Endpoint {
  if (options.target === undefined) {
    throw new TypeError("a forwarder needs a target (or targets)");
  }
  return typeof options.target === "string"
    ? parseEndpoint(options.target)
    : options.target;
}

/**
 * Starts a forwarder: listens where `options` say (TCP by default, a Unix
 * socket, or UDP) and forwards each client to `options.target` (see the
 * module doc). Binding TCP and UDP happens before it returns.
 *
 * @example A forwarder in front of an echo server
 * ```ts
 * import { serveForward } from "./forward.ts";
 * import { serveEcho } from "./echo.ts";
 *
 * await using echo = serveEcho({ hostname: "127.0.0.1", port: 0, log: () => {} });
 * await using forwarder = serveForward({
 *   hostname: "127.0.0.1",
 *   port: 0,
 *   target: `tcp://127.0.0.1:${(echo.addr as Deno.NetAddr).port}`,
 *   log: () => {},
 * });
 * const { port } = forwarder.addr as Deno.NetAddr;
 * using conn = await Deno.connect({ hostname: "127.0.0.1", port });
 * await conn.write(new TextEncoder().encode("ping"));
 * await conn.closeWrite();
 * const reply = await new Response(conn.readable).text();
 * if (reply !== "ping") throw new Error(reply);
 * ```
 */
export function serveForward(options: ForwardOptions): ForwardServer {
  const balanced = startPoolOf(options);
  const pool = balanced?.pool;
  const target = pool?.targets[0].endpoint ?? targetOf(options);
  const transport = options.transport ?? "tcp";
  if (transport === "udp") {
    return serveUdpForward(options, target, balanced);
  }
  if (transport === "unixpacket") {
    throw new TypeError("forwarding Unix datagram sockets is not supported");
  }
  if (target.transport === "ws" || target.transport === "wss") {
    return serveForwardToWebSocket(options, target, pool);
  }
  if (target.transport !== "tcp" && target.transport !== "unix") {
    throw new TypeError(
      `a ${transport} listener forwards to a tcp:// or unix: target`,
    );
  }
  return serveStreamForward(options, target, balanced);
}

/**
 * {@linkcode serveForward} on a udp:// listener: a session per client
 * address, each on a socket of its own to the (udp://) target.
 */
function serveUdpForward(
  options: ForwardOptions,
  target: Endpoint,
  balanced: StartedTargetPool | undefined,
): ForwardServer {
  if (target.transport !== "udp") {
    throw new TypeError("a udp:// listener forwards to a udp:// target");
  }
  const server = serveDatagramForward({
    hostname: options.hostname,
    port: options.port,
    target,
    sessionTimeoutMs: options.udpSessionTimeoutMs,
    maxSessions: options.maxConnections,
    maxSessionsPerSource: options.perSource,
    access: options.access,
    allowLowPorts: options.allowLowPorts,
    udpRatePerSecond: options.udpRatePerSecond,
    loopGuard: options.loopGuard,
    log: options.log,
    label: options.label,
    signal: options.signal,
    pool: balanced?.pool,
  });
  const watched = withStats(
    server,
    options.stats && { log: options.log, ...options.stats },
  );
  return balanced ? balanced.supervise(watched) : watched;
}

/**
 * {@linkcode serveForward} to a ws:// or wss:// target: each client's
 * bytes in WebSocket messages on a WebSocket of its own (one plain
 * listener, no pool: the WebSocket dial is not balanced).
 */
function serveForwardToWebSocket(
  options: ForwardOptions,
  target: WebSocketEndpoint,
  pool: TargetPool | undefined,
): ForwardServer {
  if (options.websocket || pool) {
    throw new TypeError("a ws:// target takes one plain listener");
  }
  const tls = options.targetTls;
  const webSocketPlan = {
    target,
    dial: {
      caCerts: tls?.caCerts,
      timeoutMs: options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
    },
  };
  return serve({
    name: "forward",
    defaultPort: 0,
    descriptorsPerConnection: 1,
    stream: (conn, context) => forwardToWebSocket(conn, context, webSocketPlan),
  }, options);
}

/**
 * {@linkcode serveForward} from a stream listener (or a WebSocket bridge)
 * to a tcp:// or unix: target; SIGHUP's TLS reload also reads the
 * target's TLS files again when `readTargetTls` is given.
 */
function serveStreamForward(
  options: ForwardOptions,
  target: Endpoint,
  balanced: StartedTargetPool | undefined,
): ForwardServer {
  const plan: ForwardPlan = {
    target,
    connectTimeoutMs: options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
    targetTls: options.targetTls,
    sendProxy: options.sendProxy,
    keepAlive: target.transport === "tcp" ? options.keepAlive : undefined,
    passResets: options.passResets ?? canCloseWithReset(),
    pool: balanced?.pool,
    retryUnanswered: options.balancing?.retryUnanswered,
  };
  const readTargetTls = options.readTargetTls;
  if (options.websocket && plan.retryUnanswered) {
    throw new TypeError("retryUnanswered takes a tcp:// or unix: listener");
  }
  const serverOptions: ServerOptions = {
    ...options,
    ...(readTargetTls && {
      prepareTlsReload: () => {
        const next = readTargetTls();
        return () => plan.targetTls = next;
      },
    }),
  };
  const server = options.websocket
    ? serveWebSocketBridge(serverOptions, options.websocket, plan)
    : serve({
      name: "forward",
      defaultPort: 0,
      // The target's socket.
      descriptorsPerConnection: 1,
      stream: (conn, context) => forwardConnection(conn, context, plan),
    }, serverOptions);
  return balanced ? balanced.supervise(server) : server;
}

const {
  hostname: _hostname,
  port: _port,
  udp: _udp,
  unix: _unix,
  unixpacket: _unixpacket,
  ...COMMON_FLAGS
} = serverFlags({ port: 0 });

function serverName(text: string, name: string): string {
  if (!/^[^\s/]+$/.test(text)) {
    throw new UsageError(`invalid value '${text}' for ${name}`);
  }
  return text;
}

function proxyVersion(text: string, name: string): 1 | 2 {
  if (text === "v1" || text === "1") return 1;
  if (text === "v2" || text === "2") return 2;
  throw new UsageError(
    `invalid value '${text}' for ${name}: expected v1 or v2`,
  );
}

const FLAGS = {
  "connect-timeout": flag.custom(
    "S",
    "give up dialling TARGET (resolving and TLS included)\nafter S seconds {default}",
    positiveSecondsFlag,
    { shown: String(DEFAULT_CONNECT_TIMEOUT_MS / 1000) },
  ),
  "to-tls": flag.boolean(
    "speak TLS to TARGET, to every one (verifies its\ncertificate); some only: tls in --targets FILE",
  ),
  ca: flag.string(
    "FILE",
    `--to-tls: trust the PEM CA certificates in FILE\ninstead of the default roots (wss:// TARGET: as well\nas them; needs --allow-read=FILE; a regular file of at\nmost ${
      formatBytes(MAX_SMALL_FILE_BYTES)
    })`,
  ),
  servername: flag.custom(
    "NAME",
    "--to-tls: the name to verify and send as SNI (default:\nTARGET's host)",
    serverName,
  ),
  insecure: flag.boolean("--to-tls: do not verify TARGET at all (warns)"),
  "to-cert": flag.string(
    "FILE",
    "--to-tls: present the PEM client certificate in FILE to\nTARGET (with --to-key; needs --allow-read=FILE)",
  ),
  "to-key": flag.string("FILE", "--to-tls: the PEM private key of --to-cert"),
  "send-proxy": flag.custom(
    "V",
    "write a PROXY protocol header (v1 or v2) to TARGET\nfirst, carrying the client's address",
    proxyVersion,
  ),
  "udp-session-timeout": flag.custom(
    "S",
    "UDP: end a client's session idle for S seconds {default}",
    positiveSecondsFlag,
    { shown: String(DEFAULT_UDP_SESSION_TIMEOUT_MS / 1000) },
  ),
  ...BALANCE_FLAGS,
  ...WEBSOCKET_LISTEN_FLAGS,
  ...COMMON_FLAGS,
  // The same flags, in the words of LISTEN's schemes.
  mode: {
    ...COMMON_FLAGS.mode,
    help: "unix: LISTEN: the socket file's mode {default}",
  },
  "max-connections": {
    ...COMMON_FLAGS["max-connections"],
    help:
      `most clients at once; more are closed at once {default};\nudp://: most sessions (default ${DEFAULT_UDP_SESSIONS})`,
  },
  "per-source": {
    ...COMMON_FLAGS["per-source"],
    help:
      `most clients at once from one address, an IPv6 /64\ncounting as one; more are closed at once {default};\nudp://: most sessions from one address (default ${DEFAULT_UDP_SESSIONS_PER_SOURCE})`,
  },
  "allow-low-ports": {
    ...COMMON_FLAGS["allow-low-ports"],
    help:
      "udp://: forward datagrams from source ports below 1024\ntoo (off: loop protection)",
  },
  "udp-rate": {
    ...COMMON_FLAGS["udp-rate"],
    help: "udp://: answers per second to one client address\n{default}",
  },
};

const USAGE = `usage: forward.ts [options] LISTEN TARGET [TARGET...]
       forward.ts [options] --targets FILE LISTEN

Accepts clients on LISTEN and forwards each one to TARGET over a connection
of its own, bytes both ways until both sides are done (each half-closed on
its own). LISTEN and TARGET: tcp://HOST:PORT (IPv6 as [::1]), unix:PATH
(a Unix stream socket), udp://HOST:PORT (UDP to UDP: a session per
client address), or ws://HOST:PORT/PATH and wss:// (a WebSocket bridge
as LISTEN, a WebSocket per client as TARGET). A bare HOST:PORT is TCP.

  forward.ts tcp://0.0.0.0:8080 tcp://backend:80
  forward.ts tcp://127.0.0.1:2375 unix:/var/run/docker.sock
  forward.ts udp://0.0.0.0:5353 udp://127.0.0.1:53
  forward.ts --web clients/web --origin https://example.com ws://0.0.0.0:8080/ws tcp://127.0.0.1:5900
  forward.ts tcp://127.0.0.1:9000 wss://example.com/tunnel
  forward.ts --balance leastconn tcp://0.0.0.0:80 10.0.0.1:80 10.0.0.2:80

Many targets: each client goes to one (--balance), a target whose connects
fail --fall times in a row is down and the client is tried on the next
(--retries); backup targets only when no other is up; no target up: the
client is closed at once. Every change of state is one log line.

${flagsHelp(FLAGS)}

Limits: at most --max-connections clients (default ${DEFAULT_MAX_CONNECTIONS}), each with
one connection to TARGET and one buffer per direction (${SPLICE_IDLE_BUFFER_BYTES} bytes each while
idle, ${SPLICE_BUFFER_BYTES / 1024} KiB once busy: at most ${
  (2 * SPLICE_BUFFER_BYTES) / 1024
} KiB a pair, plus the kernel's socket
buffers, and with --tls up to 64 KiB of decrypted bytes more); a side that
does not read is not read for (no queue grows). A ws:// LISTEN: a request
head of at most ${DEFAULT_MAX_REQUEST_HEAD_BYTES / 1024} KiB, whole within ${
  DEFAULT_REQUEST_HEAD_TIMEOUT_MS / 1000
} s, then the same two buffers (the
bytes of a message passed on as they come; a base64 one held whole, up to
--max-message). UDP: at most
--max-connections sessions (default ${DEFAULT_UDP_SESSIONS}), --per-source from one
address (default ${DEFAULT_UDP_SESSIONS_PER_SOURCE}), each with a socket and a ${
  MAX_DATAGRAM_BYTES / 1024
} KiB receive
buffer; no datagram from a source port below 1024 is forwarded
(--allow-low-ports), answers are limited by --udp-rate (default
${DEFAULT_UDP_RATE}/s per client address), and a client that sends each answer
straight back for hundreds of rounds faster than that (an echo: a loop) is
dropped until it slows down.

Permissions: --allow-net=LISTEN_HOST:PORT,TARGET_HOST:PORT (a target by name:
NAME:PORT). unix:PATH, to listen or to connect: --allow-net=unix:PATH
--allow-read=PATH --allow-write=PATH. UDP: --unstable-net --allow-net
(answers go to any client). --tls: --allow-read=CERT,KEY (and the
--client-ca FILE); --ca FILE, --to-cert FILE, --to-key FILE:
--allow-read=FILE. Many targets: each one's HOST:PORT; --targets FILE:
--allow-read=FILE, and every target a reload may add. --web DIR:
--allow-read=DIR. A ws:// or wss:// TARGET: its URL's HOST:PORT (443 for
wss:// without a port). To pass a side's
reset on to the other as a reset (else it gets a FIN), and for udp://
targets to go down when their sessions meet port unreachable:
--allow-ffi=LIBC (/lib/x86_64-linux-gnu/libc.so.6).`;

/** The transports LISTEN can be, as server flags name them. */
function listenValues(
  listen: Endpoint,
  values: ServerFlagValues,
): ServerFlagValues {
  switch (listen.transport) {
    // Every transport LISTEN can be is a key, given or not: the flags'
    // messages then name only those (as they do for a script's own flags).
    case "tcp":
      return {
        ...values,
        udp: false,
        unix: undefined,
        hostname: listen.hostname,
        port: listen.port,
      };
    case "udp":
      return {
        ...values,
        udp: true,
        unix: undefined,
        hostname: listen.hostname,
        port: listen.port,
      };
    case "ws":
    case "wss":
      if (listen.transport === "ws" && values.tls) {
        throw new UsageError("--tls with a ws:// LISTEN: write wss://");
      }
      return {
        ...values,
        udp: false,
        unix: undefined,
        tls: listen.transport === "wss",
        hostname: listen.hostname,
        port: listen.port,
      };
    default:
      return { ...values, udp: false, unix: listen.path };
  }
}

/** The transports forward.ts forwards: LISTEN's and TARGET's schemes. */
const FORWARDED: readonly EndpointKind[] = ["tcp", "udp", "ws", "wss", "unix"];

function endpointArgument(text: string, what: string): Endpoint {
  try {
    return parseEndpoint(text, FORWARDED);
  } catch (error) {
    if (!(error instanceof EndpointError)) throw error;
    throw new UsageError(`${what}: ${error.message}`);
  }
}

/**
 * `serverOptionsFromFlags`, its messages naming LISTEN's schemes rather
 * than the flags other servers take (`--udp`, `--unix`).
 */
function serverOptionsFrom(values: ServerFlagValues): ServerOptions {
  try {
    return serverOptionsFromFlags(values);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    throw new UsageError(
      error.message.replace(/--udp(?![\w-])/g, "udp://")
        .replace(/--unixpacket(?![\w-])/g, "unixpacket:")
        .replace(/--unix(?![\w-])/g, "unix:"),
    );
  }
}

/** The values of {@linkcode FLAGS}, as the command line gave them. */
type ForwardFlagValues = FlagValues<typeof FLAGS>;

/** Turns the command line into {@linkcode ForwardOptions}. */
function optionsFromArgs(args: string[]): ForwardOptions {
  const { values, positionals } = parseCommandLine(args, {
    usage: USAGE,
    flags: FLAGS,
    positionals: ["LISTEN", "TARGET"],
    min: 1,
    max: Infinity,
  });
  const listen = endpointArgument(positionals[0], "LISTEN");
  const specs = targetArguments(positionals.slice(1), values);
  const target = specs[0].endpoint;
  const websocket = webSocketListenOptions(listen, values);
  checkWebSocketTarget(listen, specs, values);
  const udp = listen.transport === "udp";
  checkTransportFlags(values, udp, target);
  const tlsTargets = specs.some((spec) => spec.tls);
  checkTargetTlsFlags(values, target, tlsTargets);
  // UDP: --max-connections and --per-source bound sessions (the server
  // flags give them to stream servers only).
  const {
    "max-connections": maxConnections,
    "per-source": perSource,
    ...common
  } = values;
  if (websocket && values["retry-unanswered"]) {
    throw new UsageError(
      "--retry-unanswered applies to a tcp:// or unix: LISTEN",
    );
  }
  const options: ForwardOptions = {
    ...serverOptionsFrom(listenValues(listen, udp ? common : values)),
    target,
    connectTimeoutMs: values["connect-timeout"],
    sendProxy: values["send-proxy"],
    udpSessionTimeoutMs: values["udp-session-timeout"],
    websocket,
  };
  if (udp && maxConnections !== undefined) {
    options.maxConnections = maxConnections;
  }
  if (values.targets !== undefined || specs.length > 1) {
    poolOptionsFromArgs(options, specs, values, udp);
  } else {
    refuseBalanceFlags(values);
  }
  if (udp && perSource !== undefined) options.perSource = perSource;
  if (values["to-tls"] || tlsTargets || target.transport === "wss") {
    targetTlsFromArgs(options, values);
  }
  return options;
}

/**
 * Refuses a LISTEN and TARGET of which one only is udp:// (UDP is
 * forwarded to UDP only), and the flags of the other kind of listener.
 */
function checkTransportFlags(
  values: ForwardFlagValues,
  udp: boolean,
  target: Endpoint,
): void {
  if (udp !== (target.transport === "udp")) {
    throw new UsageError(
      "LISTEN and TARGET must both be udp://, or neither (UDP is forwarded to UDP only)",
    );
  }
  const streamOnly = [
    "to-tls",
    "send-proxy",
    "accept-proxy",
    "proxy-timeout",
  ] as const;
  for (const name of streamOnly) {
    if (udp && values[name]) {
      throw new UsageError(`--${name} applies to stream (tcp://, unix:) only`);
    }
  }
  if (!udp && values["udp-session-timeout"] !== undefined) {
    throw new UsageError("--udp-session-timeout applies to udp:// only");
  }
}

/**
 * Refuses TARGET's TLS flags where they cannot apply (without --to-tls
 * or a targets file's `tls` targets, `tlsTargets`; a certificate to a
 * wss:// TARGET; --to-tls to other than tcp://) and the ones that
 * contradict or need each other.
 */
function checkTargetTlsFlags(
  values: ForwardFlagValues,
  target: Endpoint,
  tlsTargets: boolean,
): void {
  if (values["to-tls"] && tlsTargets) {
    throw new UsageError(
      "--to-tls makes every target TLS: drop it, or the targets file's tls",
    );
  }
  if (target.transport === "wss") {
    // Checked by checkWebSocketTarget: --ca applies, a certificate cannot
    // (Deno's WebSocket client presents none).
    for (const name of ["to-cert", "to-key"] as const) {
      if (values[name]) {
        throw new UsageError(`--${name} cannot be used with a wss:// TARGET`);
      }
    }
  } else if (!values["to-tls"] && !tlsTargets) {
    for (
      const name of [
        "ca",
        "servername",
        "insecure",
        "to-cert",
        "to-key",
      ] as const
    ) {
      if (values[name]) {
        throw new UsageError(
          `--${name} needs --to-tls (or tls targets in --targets FILE)`,
        );
      }
    }
  } else {
    if (values["to-tls"] && target.transport !== "tcp") {
      throw new UsageError("--to-tls needs a tcp:// TARGET");
    }
    if (values.insecure && values.ca !== undefined) {
      throw new UsageError("--insecure and --ca cannot be used together");
    }
    if (
      (values["to-cert"] === undefined) !== (values["to-key"] === undefined)
    ) {
      throw new UsageError("--to-cert and --to-key go together");
    }
  }
}

/**
 * Many targets (more than one TARGET, or --targets): `options` gets the
 * pool's targets and --balance's rule instead of one target.
 */
function poolOptionsFromArgs(
  options: ForwardOptions,
  specs: TargetSpec[],
  values: ForwardFlagValues,
  udp: boolean,
): void {
  if ((values.workers ?? 1) > 1) {
    // Each thread would keep its own pool and checks (and SIGHUP reaches
    // the main thread only).
    throw new UsageError(
      "--workers cannot be used with more than one TARGET or --targets",
    );
  }
  checkMoreTargets(specs, udp, values["to-tls"]);
  delete options.target;
  options.targets = specs;
  options.balancing = balancingFromFlags(values, udp);
}

/**
 * TARGET's TLS (--to-tls, or a wss:// TARGET) in `options`: the files
 * read now, and read again on SIGHUP when there are any.
 */
function targetTlsFromArgs(
  options: ForwardOptions,
  values: ForwardFlagValues,
): void {
  const { ca, "to-cert": cert, "to-key": key } = values;
  const read = (): ForwardTlsOptions => ({
    serverName: values.servername,
    insecure: values.insecure,
    // A missing or unreadable file is a runtime failure (exit 1).
    caCerts: ca === undefined ? undefined : [readCaFile(ca)],
    ...(cert !== undefined && key !== undefined &&
      { certificate: readTlsFiles(cert, key) }),
  });
  options.targetTls = read();
  // SIGHUP reads them again, as it reads --cert, --key, --client-ca.
  if (ca !== undefined || cert !== undefined) options.readTargetTls = read;
}

/**
 * The targets: TARGET arguments, or `--targets FILE`'s lines (a file that
 * cannot be read or a bad line: one `error:` line, exit 1).
 */
function targetArguments(
  texts: string[],
  values: { targets?: string; workers?: number },
): TargetSpec[] {
  if (values.targets === undefined) {
    if (texts.length === 0) {
      throw new UsageError("missing argument TARGET (see --help)");
    }
    return texts.map((text) => ({
      endpoint: endpointArgument(text, "TARGET"),
    }));
  }
  if (texts.length > 0) {
    throw new UsageError("give TARGET arguments or --targets FILE, not both");
  }
  return readTargetsFile(values.targets);
}

/** The checks TARGET gets, for every target after the first. */
function checkMoreTargets(
  specs: TargetSpec[],
  udp: boolean,
  tls: boolean,
): void {
  for (const { endpoint } of specs.slice(1)) {
    const where = formatEndpoint(endpoint);
    if ((endpoint.transport === "udp") !== udp) {
      throw new UsageError(
        `${where}: LISTEN and every TARGET must be udp://, or none`,
      );
    }
    if (tls && endpoint.transport !== "tcp") {
      throw new UsageError(`${where}: --to-tls needs tcp:// targets`);
    }
  }
}

if (import.meta.main) {
  await runMain(async () => {
    const options = optionsFromArgs(Deno.args);
    if (options.targetTls?.insecure && !workerPlace()) {
      console.error(
        "warning: --insecure: TARGET's certificate is not verified; anyone on the path to it can read and change the forwarded connections",
      );
    }
    const server = serveForward(options);
    const file = options.balancing?.targetsFile;
    const stopReloading = file !== undefined && server.pool &&
      reloadTargetsOnHangup(server.pool, file, stderrLog);
    try {
      await runServers([{ server }]);
    } finally {
      if (stopReloading) stopReloading();
    }
  });
}
