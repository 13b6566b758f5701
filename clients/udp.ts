/**
 * UDP hello client, the client side of the seed's "UDP server snippet"
 * (the seed: the classic C socket examples page this toolkit ports): sends
 * MESSAGE (default `hello`) to 127.0.0.1:3500 and writes the reply to
 * stdout (a newline after it if it did not end its line). UDP may lose either datagram, so it sends again after each
 * `--timeout` seconds without a reply (default 1), `--retries` times
 * (default 3), and when none comes fails with `error: no reply ...`, exit 1.
 *
 * ```sh
 * $ socat UDP-RECVFROM:3500,bind=127.0.0.1,fork SYSTEM:'echo hi' &
 * $ deno run --unstable-net --allow-net=0.0.0.0:0,127.0.0.1:3500 clients/udp.ts
 * ...
 * hi
 * $ deno task udp-client hello
 * ...
 * hi
 * $ deno install -g -f -n sock-udp-client --config=deno.json --unstable-net --allow-net=0.0.0.0:0,127.0.0.1:3500 clients/udp.ts
 * ...
 * $ sock-udp-client
 * ...
 * hi
 * ```
 *
 * (`...`: a busy machine may lose a datagram or answer late, and the client
 * then says it sends again.)
 *
 * With no server:
 *
 * ```sh
 * $ deno task udp-client --timeout 0.2
 * no reply within 0.2 s; sending again (2 of 4)
 * no reply within 0.2 s; sending again (3 of 4)
 * no reply within 0.2 s; sending again (4 of 4)
 * error: no reply from 127.0.0.1:3500 after 4 attempts (0.2 s each)
 * ```
 *
 * The permission names the socket it binds (any address, port 0; `[::]:0`
 * for an IPv6 server, as in
 * `--allow-net=[::]:0,[::1]:3500 clients/udp.ts --hostname ::1`) and the
 * one server it sends to. Only a datagram from the server's address and
 * port counts as its reply. The other side: `servers/udp.ts`.
 *
 * @module
 */

import {
  clientFlags,
  flag,
  flagsHelp,
  parseCommandLine,
  requestDatagram,
  runMain,
  stderrLogNow,
  stdoutAfterLog,
  writeAll,
} from "../mod.ts";

/** The snippet's server port. */
export const UDP_HELLO_PORT = 3500;

/** The server address asked by default (the seed's). */
export const UDP_HELLO_HOSTNAME = "127.0.0.1";

/** Options for {@linkcode sendUdpHello}. */
export interface UdpHelloClientOptions {
  /** Server host name or IP literal. Default `127.0.0.1`. */
  hostname?: string;
  /** Server port. Default 3500. */
  port?: number;
  /** What to send. Default `hello`. */
  message?: string | Uint8Array;
  /** Wait for a reply this long after each send, in ms. Default 1000. */
  timeoutMs?: number;
  /** Send again this many times when no reply comes. Default 3. */
  retries?: number;
  /** Told about each retry. Default: nothing. */
  log?: (line: string) => void;
}

/**
 * Sends the message and returns the server's reply. Rejects with a
 * `ConnectError` (from `mod.ts`) of kind `no-reply` when none comes.
 *
 * @example Against the UDP hello server
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { sendUdpHello } from "./udp.ts";
 * import { serveUdpHello } from "../servers/udp.ts";
 *
 * const output = { write: (p: Uint8Array) => Promise.resolve(p.length) };
 * await using server = serveUdpHello({ port: 0, output, log: () => {} });
 * const { port } = server.addr as Deno.NetAddr;
 * const reply = await sendUdpHello({ port, message: "hi" });
 * assertEquals(new TextDecoder().decode(reply), "hello");
 * ```
 */
export function sendUdpHello(
  options: UdpHelloClientOptions = {},
): Promise<Uint8Array> {
  const message = options.message ?? "hello";
  return requestDatagram({
    hostname: options.hostname ?? UDP_HELLO_HOSTNAME,
    port: options.port ?? UDP_HELLO_PORT,
    message: typeof message === "string"
      ? new TextEncoder().encode(message)
      : message,
    timeoutMs: options.timeoutMs,
    retries: options.retries,
    log: options.log,
  });
}

const FLAGS = {
  hostname: flag.string("H", "server address", { default: UDP_HELLO_HOSTNAME }),
  ...clientFlags({
    port: UDP_HELLO_PORT,
    timeoutMs: 1000,
    timeoutHelp: "wait S seconds for a reply after each send",
  }),
  retries: flag.integer("N", "send again up to N times", {
    min: 0,
    max: 100,
    default: 3,
  }),
};

const USAGE = `usage: udp.ts [options] [MESSAGE]

UDP hello client: sends MESSAGE (default "hello") in one datagram and prints
the reply; sends again when none comes within the timeout.

${flagsHelp(FLAGS)}

Permissions: --unstable-net --allow-net=0.0.0.0:0,HOST:PORT
(for an IPv6 server: --allow-net=[::]:0,[HOST]:PORT).`;

if (import.meta.main) {
  await runMain(async () => {
    const { values, positionals } = parseCommandLine(Deno.args, {
      usage: USAGE,
      flags: FLAGS,
      positionals: ["MESSAGE"],
      min: 0,
    });
    const reply = await sendUdpHello({
      hostname: values.hostname,
      port: values.port,
      message: positionals[0],
      timeoutMs: values.timeout,
      retries: values.retries,
      log: stderrLogNow,
    });
    // The reply's last line ends with a newline, so what a terminal shows
    // next (the prompt) starts on a line of its own; the bytes before it
    // are the reply's, as they came.
    const ended = reply.length === 0 || reply.at(-1) === 0x0a;
    await writeAll(
      stdoutAfterLog({ firstOnly: true }),
      ended ? reply : new Uint8Array([...reply, 0x0a]),
    );
  });
}
