/**
 * Server-side TCP keepalive, from the seed's "Enabling TCP keepalive at
 * server side" (the seed: the classic C socket examples page this toolkit
 * ports): one command starts a server on ADDRESS:12345 and a client that
 * connects to it; the server accepts, turns keepalive on with idle 1 s,
 * interval 1 s and 10 probes, and both sit idle until SIGINT or SIGTERM, so
 * the kernel's probes (empty ACKs, one a second) show on the wire.
 *
 * ```sh
 * $ deno run --allow-net=127.0.0.1:12345 \
 *     --allow-ffi=/lib/x86_64-linux-gnu/libc.so.6 servers/keepalive.ts 127.0.0.1 &
 * connected
 * accepted
 * accepted 127.0.0.1:50438
 * keepalive on 127.0.0.1:50438: idle 1 s, interval 1 s, 10 probes
 * listening on 127.0.0.1:12345
 * $ tcpdump -q -n -i lo -c 2 port 12345 2>/dev/null   # as root
 * 15:05:07.114512 IP 127.0.0.1.12345 > 127.0.0.1.45434: tcp 0
 * 15:05:07.114523 IP 127.0.0.1.45434 > 127.0.0.1.12345: tcp 0
 * ```
 *
 * (`listening on` comes last: the client has to be connected and the
 * connection accepted before the demo counts as started.) `deno task
 * keepalive 127.0.0.1` runs the same command; another ADDRESS needs its
 * own permission, e.g. `--allow-net=[::1]:12345` for `::1`.
 *
 * Tuning the probes goes through libc's `setsockopt` (Linux only: Deno's
 * own `setKeepAlive` is on/off), hence `--allow-ffi`, scoped to libc where
 * Debian and Ubuntu keep it on x86_64 (arm64:
 * `/lib/aarch64-linux-gnu/libc.so.6`; elsewhere the path
 * `ldconfig -p | grep libc.so.6` prints), or plain `--allow-ffi`. FFI runs
 * native code outside Deno's sandbox: grant it to programs you trust.
 * Without it the script stops with one `error:` line naming the flag:
 *
 * ```sh
 * $ deno run --allow-net=127.0.0.1:12345 servers/keepalive.ts 127.0.0.1
 * error: tuning keepalive needs --allow-ffi=/lib/x86_64-linux-gnu/libc.so.6 (Debian, Ubuntu; find yours with `ldconfig -p | grep libc.so.6`), or --allow-ffi
 * $ deno install -g -f -n sock-keepalive --config=deno.json --allow-net=127.0.0.1:12345 --allow-ffi=/lib/x86_64-linux-gnu/libc.so.6 servers/keepalive.ts
 * ...
 * $ sock-keepalive --help
 * usage: keepalive.ts [options] ADDRESS
 * ...
 * ```
 *
 * `--idle`, `--interval` and `--count` change the timing; `--port` the
 * port. Every server here takes `--keepalive IDLE,INTERVAL,COUNT` too.
 *
 * Unlike the seed, which forks, client and server share one process (Deno
 * has no fork) and stop together; if the kernel declares the peer dead (the
 * probes went unanswered: a read fails with ETIMEDOUT, about
 * `idle + interval × count` seconds after the last traffic), the server
 * says so on stderr (`closed PEER (...): peer dead (keepalive probes
 * unanswered)`).
 *
 * @module
 */

import {
  closeQuietly,
  describeKeepAlive,
  flag,
  flagsHelp,
  KEEPALIVE_LIMITS,
  type KeepAliveConfig,
  type Log,
  parseCommandLine,
  runMain,
  runServers,
  serve,
  type Server,
  stderrLog,
  stripBrackets,
  UsageError,
} from "../mod.ts";

/** The seed's port. */
export const KEEPALIVE_PORT = 12345;

/** The seed's timing: first probe after 1 s idle, then every 1 s, 10 probes. */
export const SEED_KEEPALIVE: Readonly<
  Required<Omit<KeepAliveConfig, "enable">>
> = {
  idle: 1,
  interval: 1,
  count: 10,
};

/** Options for {@linkcode startKeepAliveDemo}. */
export interface KeepAliveDemoOptions {
  /** Address to listen on and connect to (IPv4 or IPv6). */
  hostname: string;
  /** Port; 0 picks a free one. Default {@linkcode KEEPALIVE_PORT}. */
  port?: number;
  /** Keepalive for the accepted connection. Default {@linkcode SEED_KEEPALIVE}. */
  keepAlive?: KeepAliveConfig;
  /** Where `connected` and `accepted` go. Default: a line on stdout. */
  print?: (line: string) => void;
  /** Where log lines go. Default {@linkcode stderrLog}. */
  log?: Log;
}

const encoder = new TextEncoder();

function printStdout(line: string): void {
  const bytes = encoder.encode(line + "\n");
  for (let offset = 0; offset < bytes.byteLength;) {
    offset += Deno.stdout.writeSync(bytes.subarray(offset));
  }
}

/** Waits until the peer closes or the read fails; keepalive does the rest. */
async function waitForClose(conn: Deno.Conn): Promise<void> {
  const buffer = new Uint8Array(1024);
  while ((await conn.read(buffer)) !== null) {
    // The seed's peers send nothing; anything that comes is dropped.
  }
}

/**
 * Starts the seed's pair: a server on `hostname:port` that accepts one
 * client and sets keepalive on it (through {@linkcode serve}'s `keepAlive`
 * option), and that client, connected. Returns a {@linkcode Server}:
 * `shutdown()` closes the client, then the server.
 *
 * @example Both ends on a free loopback port, stopped by `await using`
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { startKeepAliveDemo } from "./keepalive.ts";
 *
 * const lines: string[] = [];
 * await using demo = await startKeepAliveDemo({
 *   hostname: "127.0.0.1",
 *   port: 0,
 *   print: (line) => lines.push(line),
 *   log: () => {},
 * });
 * while (lines.length < 2) await new Promise((r) => setTimeout(r, 10));
 * assertEquals(lines, ["connected", "accepted"]);
 * ```
 */
export async function startKeepAliveDemo(
  options: KeepAliveDemoOptions,
): Promise<Server> {
  const print = options.print ?? printStdout;
  const log = options.log ?? stderrLog;
  let markConnected!: () => void;
  const connected = new Promise<void>((resolve) => markConnected = resolve);
  const keepAlive = options.keepAlive ?? SEED_KEEPALIVE;
  const server = serve({
    name: "keepalive",
    defaultPort: KEEPALIVE_PORT,
    stream: async (conn, context) => {
      // The seed's order: the client's line first.
      await connected;
      print("accepted");
      log(`keepalive on ${context.peer}: ${describeKeepAlive(keepAlive)}`);
      await waitForClose(conn);
    },
  }, {
    hostname: options.hostname,
    port: options.port ?? KEEPALIVE_PORT,
    keepAlive,
    // The seed's listen(server, 1): this demo serves its own client only.
    maxConnections: 1,
    gracePeriodMs: 1000,
    log,
  });
  const { port } = server.addr as Deno.NetAddr;
  let client: Deno.TcpConn;
  try {
    client = await Deno.connect({ hostname: options.hostname, port });
  } catch (error) {
    await server.shutdown();
    throw error;
  }
  print("connected");
  markConnected();
  let closing = false;
  const clientDone = waitForClose(client).catch((error) => {
    if (!closing) log(`client: ${(error as Error).message}`);
  });
  const shutdown = async (): Promise<void> => {
    if (!closing) {
      closing = true;
      closeQuietly(client);
    }
    await Promise.all([clientDone, server.shutdown()]);
  };
  return {
    addr: server.addr,
    ready: server.ready,
    finished: server.finished.then(() => clientDone),
    socketClosed: server.socketClosed,
    shutdown,
    [Symbol.asyncDispose]: shutdown,
  };
}

const FLAGS = {
  port: flag.integer("P", "port", {
    min: 0,
    max: 65535,
    shown: `${KEEPALIVE_PORT}; 0 picks a free one`,
  }),
  idle: flag.integer("S", "seconds idle before the first probe", {
    ...KEEPALIVE_LIMITS.idle,
    default: SEED_KEEPALIVE.idle,
  }),
  interval: flag.integer("S", "seconds between probes", {
    ...KEEPALIVE_LIMITS.interval,
    default: SEED_KEEPALIVE.interval,
  }),
  count: flag.integer("N", "unanswered probes before the peer is dead", {
    ...KEEPALIVE_LIMITS.count,
    default: SEED_KEEPALIVE.count,
  }),
};

const USAGE = `usage: keepalive.ts [options] ADDRESS

Starts a server on ADDRESS:${KEEPALIVE_PORT} and a client that connects to it;
the server turns TCP keepalive on for the accepted connection, prints
'accepted' (the client prints 'connected'), and both wait for SIGINT or
SIGTERM. Watch the probes with: tcpdump -n -i lo port ${KEEPALIVE_PORT}

${flagsHelp(FLAGS)}

Permissions: --allow-net=ADDRESS:PORT and FFI access to libc for tuning,
--allow-ffi=/lib/x86_64-linux-gnu/libc.so.6 (or --allow-ffi). Linux only.`;

if (import.meta.main) {
  await runMain(async () => {
    const { values, positionals } = parseCommandLine(Deno.args, {
      usage: USAGE,
      flags: FLAGS,
      positionals: ["ADDRESS"],
    });
    const hostname = stripBrackets(positionals[0]);
    if (hostname === "") throw new UsageError("ADDRESS is empty (see --help)");
    const demo = await startKeepAliveDemo({
      hostname,
      port: values.port ?? KEEPALIVE_PORT,
      keepAlive: {
        idle: values.idle,
        interval: values.interval,
        count: values.count,
      },
    });
    await runServers([{ server: demo }]);
  });
}
