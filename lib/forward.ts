/**
 * Forwarding one accepted stream connection, as `servers/forward.ts` does
 * for each client: its own connection to the target (resolved and dialled
 * by Happy Eyeballs each time, with a PROXY protocol header and TLS when
 * asked), joined with {@linkcode splice}, and one closing log line that
 * says where it went, how long it took and why it ended.
 *
 * @module
 */

import type { ConnectionContext } from "./server_options.ts";
import { describeConnectFailure } from "./connect_error.ts";
import { formatSeconds } from "./units.ts";
import { dialHost } from "./dial.ts";
import { type Endpoint, formatAddr } from "./endpoint.ts";
import { closeQuietly, writeAll } from "./io.ts";
import {
  closeWithReset,
  type KeepAliveConfig,
  setKeepAlive,
} from "./keepalive.ts";
import { encodeProxyHeader } from "./proxy_protocol.ts";
import { splice, type SpliceConn } from "./splice.ts";
import type { TlsCertificate } from "./tls.ts";
import { startClientTls } from "./tls_client.ts";
import type { PoolTarget, Taken, TargetPool } from "./targets.ts";
import { RetryingTarget, retryUnanswered } from "./unanswered_retry.ts";

/**
 * How the forwarder speaks TLS to its target (`--to-tls`), or to a pool's
 * TLS targets (`PoolTarget.tls`).
 */
export interface ForwardTlsOptions {
  /** PEM CA certificates to trust instead of Deno's default roots. */
  caCerts?: string[];
  /** The name to verify and send as SNI. Default: the target's host. */
  serverName?: string;
  /** Do not verify the target at all. */
  insecure?: boolean;
  /** A client certificate and key to present to the target. */
  certificate?: TlsCertificate;
}

/**
 * What forwarding each client takes, decided once for a server: where to
 * and how. (A PROXY header from the client, `--accept-proxy`, is the
 * server core's: the handler gets the client it names as
 * `context.remoteAddr`.)
 */
export interface ForwardPlan {
  /** Where each client goes: `tcp://` (dialled by Happy Eyeballs) or `unix:`. */
  target: Endpoint;
  /** Dialling (resolving and TLS included) gives up after this long, in ms. */
  connectTimeoutMs: number;
  /**
   * Speak TLS to the target. With `pool`: how TLS is spoken to the targets
   * marked TLS (`PoolTarget.tls`); the others are plain.
   */
  targetTls?: ForwardTlsOptions;
  /** Write a PROXY protocol header of this version to the target first. */
  sendProxy?: 1 | 2;
  /** TCP keepalive on the connection to the target too. */
  keepAlive?: KeepAliveConfig | boolean;
  /**
   * Pass a reset on as a reset: a target that resets gets its client's
   * connection reset too (and the reverse), instead of closed with a FIN.
   * Takes FFI access to libc (see `closeWithReset`); `servers/forward.ts`
   * turns it on when that is granted. Default `false`.
   */
  passResets?: boolean;
  /**
   * Many targets: each client goes to the one the pool picks (retried on
   * the next when its connect fails), and `target` is not used.
   */
  pool?: TargetPool;
  /**
   * With `pool`: a target that resets or closes before its first byte to
   * the client, after the client sent something, counts as a failure and
   * the client's bytes so far (at most `RETRY_UNANSWERED_MAX_BYTES`) go to
   * the next target, within the same `retries` (see
   * `unanswered_retry.ts`; only for requests that may be sent twice).
   * Default `false`.
   */
  retryUnanswered?: boolean;
}

/** `closeWithReset` for a spliced connection (the client's, or a TCP target's). */
function resetQuietly(conn: SpliceConn): void {
  if (conn instanceof RetryingTarget) {
    // The target in use is the one to reset.
    const current = conn.current;
    if ("localAddr" in current) closeWithReset(current as Deno.Conn);
    closeQuietly(conn);
  } else if ("localAddr" in conn) closeWithReset(conn as Deno.Conn);
  else closeQuietly(conn);
}

/**
 * Opens the connection to the target for one client, writing the PROXY
 * header first when asked and starting TLS when asked; every failure is a
 * one-line `ConnectError`.
 */
async function dialTarget(
  plan: ForwardPlan,
  source: Deno.Addr,
  destination: Deno.Addr,
): Promise<{ conn: SpliceConn; address: string; warning?: string }> {
  const target = plan.target;
  const header = plan.sendProxy &&
    encodeProxyHeader(plan.sendProxy, { source, destination });
  if ("path" in target) {
    let conn: Deno.UnixConn;
    try {
      conn = await Deno.connect({ transport: "unix", path: target.path });
    } catch (error) {
      throw describeConnectFailure(error, target.path);
    }
    try {
      if (header) await writeAll(conn, header);
    } catch (error) {
      closeQuietly(conn);
      throw describeConnectFailure(error, target.path);
    }
    return { conn, address: target.path };
  }
  const tcp = await dialHost(target.hostname, target.port, {
    timeoutMs: plan.connectTimeoutMs,
  });
  const address = formatAddr(tcp.remoteAddr);
  let warning: string | undefined;
  try {
    // A forwarder passes each write on at once: Nagle would hold a small
    // one back behind an unacknowledged one.
    tcp.setNoDelay(true);
    if (plan.keepAlive) {
      try {
        setKeepAlive(tcp, plan.keepAlive);
      } catch (error) {
        // As the server core does for the client's side: said, not fatal.
        warning = `(keepalive not set: ${(error as Error).message})`;
      }
    }
    if (header) await writeAll(tcp, header);
  } catch (error) {
    closeQuietly(tcp);
    throw describeConnectFailure(error, address);
  }
  if (!plan.targetTls) return { conn: tcp, address, warning };
  const tls = await startClientTls(tcp, {
    serverName: plan.targetTls.serverName ?? target.hostname,
    caCerts: plan.targetTls.caCerts,
    insecure: plan.targetTls.insecure,
    certificate: plan.targetTls.certificate,
    handshakeTimeoutMs: plan.connectTimeoutMs,
  });
  return { conn: tls, address, warning };
}

/**
 * Forwards one accepted client as `plan` says: dials the target for it
 * (with a PROXY header for `context.remoteAddr`, the client, when asked),
 * joins the two with {@linkcode splice}, and sets the byte counts and
 * `context.note` (`to TARGET, DURATION, WHY`) for the server core's
 * closing line. Throws the one-line failure (a refused target...) for
 * that line.
 *
 * @example As a server's stream handler
 * ```ts
 * import { serve } from "./server.ts";
 * import { forwardConnection } from "./forward.ts";
 * import { silentLog } from "./log.ts";
 *
 * using echo = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const echoing = echo.accept().then((c) => c.readable.pipeTo(c.writable));
 * const plan = {
 *   target: { transport: "tcp" as const, hostname: "127.0.0.1", port: echo.addr.port },
 *   connectTimeoutMs: 1000,
 * };
 * await using server = serve({
 *   name: "forward",
 *   defaultPort: 0,
 *   stream: (conn, context) => forwardConnection(conn, context, plan),
 * }, { hostname: "127.0.0.1", port: 0, log: silentLog });
 * const { port } = server.addr as Deno.NetAddr;
 * using conn = await Deno.connect({ hostname: "127.0.0.1", port });
 * await conn.write(new TextEncoder().encode("hi"));
 * await conn.closeWrite();
 * const reply = await new Response(conn.readable).text();
 * await echoing;
 * if (reply !== "hi") throw new Error(reply);
 * ```
 */
export async function forwardConnection(
  conn: Deno.Conn,
  context: ConnectionContext,
  plan: ForwardPlan,
): Promise<void> {
  const began = performance.now();
  if ("setNoDelay" in conn) (conn as Deno.TcpConn).setNoDelay(true);
  let target = await dialForClient(plan, context);
  const targetConn = plan.retryUnanswered
    ? retryingTarget(plan, context, target, (next) => target = next)
    : target.conn;
  // Returned, not awaited: a function waiting here for the pair's whole
  // life kept its generator and registers (about 240 bytes of heap a pair).
  return splice(conn, targetConn, {
    onActivity: () => context.active(),
    ...(plan.passResets && { closeWithReset: resetQuietly }),
  }).then((result) => {
    target.release?.();
    context.bytesIn = result.bytesToTarget;
    context.bytesOut = result.bytesToClient;
    context.note = forwardNote(target, began, result.end);
  });
}

/**
 * `first`'s connection, replaced by the next target of the plan's pool
 * when it drops the client's request unanswered (`retryUnanswered`): the
 * drop counts against its target, and `replaced` gets the new one (its
 * address, with the dropped ones, for the closing line).
 */
function retryingTarget(
  plan: ForwardPlan,
  context: { readonly remoteAddr: Deno.Addr; readonly localAddr: Deno.Addr },
  first: DialledTarget,
  replaced: (next: DialledTarget) => void,
): SpliceConn {
  const pool = plan.pool;
  if (!pool || !first.taken) return first.conn;
  let current = first;
  return retryUnanswered(first.conn, {
    answered: () => current.taken!.answered(),
    redial: async (why) => {
      const dropped = current.taken!;
      pool.failed(dropped.target, why, "answer");
      current.release?.();
      current = await dialFromPool(plan, pool, context, {
        ...dropped,
        retried: [...dropped.retried, { target: dropped.target, reason: why }],
      });
      replaced(current);
      return current.conn;
    },
  });
}

/**
 * A forwarded client's closing note: `to TARGET, DURATION, WHY`, and what
 * went wrong on the way that did not stop it.
 *
 * @example
 * ```ts
 * import { assertMatch } from "@std/assert";
 * import { forwardNote } from "./forward.ts";
 *
 * const note = forwardNote({ address: "127.0.0.1:80" }, performance.now(), "client closed first");
 * assertMatch(note, /^to 127\.0\.0\.1:80, [\d.]+ s, client closed first$/);
 * ```
 */
export function forwardNote(
  target: Pick<DialledTarget, "address" | "warning">,
  began: number,
  end: string,
): string {
  return `to ${target.address}, ${
    formatSeconds(performance.now() - began)
  }, ${end}${target.warning ? ` ${target.warning}` : ""}`;
}

/** A target dialled for a client, by {@linkcode dialForClient}. */
export interface DialledTarget {
  /** The connection to the target (TLS when the plan speaks it). */
  conn: SpliceConn;
  /** Where it went, for the closing line (with the targets tried first). */
  address: string;
  /** What went wrong but did not stop it (keepalive not set). */
  warning?: string;
  /** A pool's target: tell the pool the client has ended. */
  release?: () => void;
  /** A pool's target: what the pool handed out (for a retry after it). */
  taken?: Taken<unknown>;
}

/**
 * Dials the target for one client as `plan` says: its one target, or the
 * one its pool picks (retried on the next when a connect fails), with a
 * PROXY header for `client.remoteAddr` when asked. What
 * {@linkcode forwardConnection} does before it joins the two; the
 * WebSocket bridge does the same for each of its clients.
 *
 * @example
 * ```ts
 * import { dialForClient } from "./forward.ts";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const client: Deno.NetAddr = { transport: "tcp", hostname: "127.0.0.1", port: 5000 };
 * const target = await dialForClient({
 *   target: { transport: "tcp", hostname: "127.0.0.1", port: listener.addr.port },
 *   connectTimeoutMs: 1000,
 * }, { remoteAddr: client, localAddr: listener.addr });
 * target.conn.close();
 * ```
 */
export function dialForClient(
  plan: ForwardPlan,
  client: { readonly remoteAddr: Deno.Addr; readonly localAddr: Deno.Addr },
): Promise<DialledTarget> {
  return plan.pool
    ? dialFromPool(plan, plan.pool, client)
    : dialTarget(plan, client.remoteAddr, client.localAddr);
}

/**
 * Dials the target `pool` picks for the client (by its address, for
 * `source`), retried on the next one when a connect fails; the result's
 * `release` tells the pool the client has ended.
 */
async function dialFromPool(
  plan: ForwardPlan,
  pool: TargetPool,
  context: { readonly remoteAddr: Deno.Addr; readonly localAddr: Deno.Addr },
  after?: Taken<unknown>,
): Promise<DialledTarget> {
  const client = "hostname" in context.remoteAddr
    ? context.remoteAddr.hostname
    : "";
  const taken = await pool.take(
    client,
    (target) =>
      dialTarget(
        planFor(plan, target),
        context.remoteAddr,
        context.localAddr,
      ),
    { after, answerConfirms: plan.retryUnanswered },
  );
  // A retried client's closing line says where it was tried first:
  // `to 127.0.0.3:80 (after 127.0.0.2:80: connection refused), ...`.
  const retried = taken.retried.map((r) => `${r.target.name}: ${r.reason}`);
  return {
    ...taken.value,
    address: retried.length === 0
      ? taken.value.address
      : `${taken.value.address} (after ${retried.join("; ")})`,
    release: taken.release,
    taken,
  };
}

/**
 * `plan` for one of its pool's targets: that target, in TLS when it is a
 * TLS one (with the plan's TLS settings, or Deno's roots without them),
 * plain otherwise.
 */
function planFor(plan: ForwardPlan, target: PoolTarget): ForwardPlan {
  return {
    ...plan,
    target: target.endpoint,
    targetTls: target.tls ? plan.targetTls ?? {} : undefined,
  };
}

/**
 * Dials `target` as `plan` says, for a health check: TLS when the target
 * speaks it, no PROXY header (as haproxy's checks without
 * `check-send-proxy`), giving up after `timeoutMs`.
 *
 * @example
 * ```ts
 * import { dialForCheck } from "./forward.ts";
 * import { PoolTarget } from "./targets.ts";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const target = new PoolTarget({
 *   endpoint: { transport: "tcp", hostname: "127.0.0.1", port: listener.addr.port },
 * });
 * const conn = await dialForCheck({ target: target.endpoint, connectTimeoutMs: 1000 }, target, 1000);
 * conn.close();
 * ```
 */
export async function dialForCheck(
  plan: ForwardPlan,
  target: PoolTarget,
  timeoutMs: number,
): Promise<SpliceConn> {
  const nowhere: Deno.NetAddr = {
    transport: "tcp",
    hostname: "0.0.0.0",
    port: 0,
  };
  const dialled = await dialTarget(
    {
      ...planFor(plan, target),
      sendProxy: undefined,
      connectTimeoutMs: timeoutMs,
    },
    nowhere,
    nowhere,
  );
  return dialled.conn;
}
