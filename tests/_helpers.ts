/**
 * Test helpers: run scripts as real subprocesses with the exact permissions
 * a user gives them, wait for their `listening on` line, and find real peers
 * (socat, nc...) or say why a test is skipped.
 *
 * @module
 */

import { assertEquals, AssertionError, assertMatch } from "@std/assert";
import { concat, equals } from "@std/bytes";
import { getAvailablePort } from "@std/net";
import { TextLineStream } from "@std/streams";
import { TLS_ENGINE_CHOICES, type TlsEngineChoice } from "../mod.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const decoder = new TextDecoder();

/** Absolute path of a file in the repository. */
export function repoPath(relative: string): string {
  return ROOT + relative;
}

/**
 * The TLS engine the TLS tests run servers on, from `TLS_ENGINE` (`auto`,
 * `native` or `node`; CI runs the TLS suite once with `native` and once
 * with `node`); unset, each server's own default. A server script started
 * by {@linkcode spawn} with `--tls` gets `--tls-engine` with it, unless
 * its arguments name one; an in-process server takes
 * {@linkcode tlsEngineOption}.
 */
export const TLS_ENGINE: TlsEngineChoice | undefined = (() => {
  const value = Deno.env.get("TLS_ENGINE") || undefined;
  if (value === undefined) return undefined;
  const choice = TLS_ENGINE_CHOICES.find((choice) => choice === value);
  if (!choice) {
    throw new Error(
      `TLS_ENGINE=${value}: expected ${TLS_ENGINE_CHOICES.join(", ")}`,
    );
  }
  return choice;
})();

/** `{ tlsEngine: TLS_ENGINE }` when set: spread into a TLS server's options. */
export function tlsEngineOption(): { tlsEngine?: TlsEngineChoice } {
  return TLS_ENGINE ? { tlsEngine: TLS_ENGINE } : {};
}

/**
 * A server script's arguments with `--tls-engine ENGINE` (default
 * `TLS_ENGINE`) right after its `--tls`: among the flags, before any
 * program and its arguments.
 */
export function withTlsEngine(
  program: string,
  args: string[],
  engine: TlsEngineChoice | undefined = TLS_ENGINE,
): string[] {
  const at = args.indexOf("--tls");
  if (
    !engine || !program.startsWith("servers/") || at < 0 ||
    args.includes("--tls-engine")
  ) {
    return args;
  }
  return [
    ...args.slice(0, at + 1),
    "--tls-engine",
    engine,
    ...args.slice(at + 1),
  ];
}

/** A script running as a subprocess. */
export class ScriptProcess implements AsyncDisposable {
  readonly child: Deno.ChildProcess;
  /** Every stderr line so far. */
  readonly stderrLines: string[] = [];
  /** Every stdout byte so far. */
  readonly stdoutChunks: Uint8Array[] = [];
  readonly #waiters = new Set<() => void>();
  readonly #stderrDone: Promise<void>;
  readonly #stdoutDone: Promise<void>;
  #status?: Deno.CommandStatus;
  readonly statusPromise: Promise<Deno.CommandStatus>;

  constructor(child: Deno.ChildProcess) {
    this.child = child;
    this.#stderrDone = this.#pumpStderr();
    this.#stdoutDone = this.#pumpStdout();
    this.statusPromise = child.status.then((status) => {
      this.#status = status;
      this.#notify();
      return status;
    });
  }

  async #pumpStderr(): Promise<void> {
    const lines = this.child.stderr
      .pipeThrough(new TextDecoderStream())
      .pipeThrough(new TextLineStream());
    for await (const line of lines) {
      this.stderrLines.push(line);
      this.#notify();
    }
    this.#notify();
  }

  async #pumpStdout(): Promise<void> {
    for await (const chunk of this.child.stdout) {
      this.stdoutChunks.push(chunk);
      this.#notify();
    }
  }

  #notify(): void {
    for (const wake of this.#waiters) wake();
  }

  /** Everything written to stdout so far, as text. */
  get stdout(): string {
    return decoder.decode(concat(this.stdoutChunks));
  }

  /** Everything written to stderr so far. */
  get stderr(): string {
    return this.stderrLines.join("\n");
  }

  /** Waits until `predicate` holds, or rejects after `timeoutMs`. */
  async until(
    predicate: () => boolean,
    what: string,
    timeoutMs = 10_000,
  ): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!predicate()) {
      const left = deadline - Date.now();
      if (left <= 0 || (this.#status && !predicate())) {
        if (this.#status) await this.#stderrDone;
        if (predicate()) return;
        throw new Error(
          `timed out waiting for ${what}${
            this.#status ? ` (process exited ${this.#status.code})` : ""
          }; stderr:\n${this.stderr}`,
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, Math.min(left, 200));
        function done() {
          clearTimeout(timer);
          resolve();
        }
        this.#waiters.add(done);
      });
      this.#waiters.clear();
    }
  }

  /** Waits for a stderr line matching `pattern`; returns the match. */
  async waitForStderr(
    pattern: RegExp,
    timeoutMs = 10_000,
  ): Promise<RegExpMatchArray> {
    let match: RegExpMatchArray | null = null;
    await this.until(
      () => {
        for (const line of this.stderrLines) {
          match = line.match(pattern);
          if (match) return true;
        }
        return false;
      },
      `stderr to match ${pattern}`,
      timeoutMs,
    );
    return match!;
  }

  /** Sends `signal` if the process still runs. */
  kill(signal: Deno.Signal = "SIGTERM"): void {
    if (this.#status) return;
    try {
      this.child.kill(signal);
    } catch {
      // Exited meanwhile.
    }
  }

  /** Waits for exit; returns code and all output. */
  async finished(): Promise<{ code: number; stdout: string; stderr: string }> {
    const status = await this.statusPromise;
    await Promise.all([this.#stderrDone, this.#stdoutDone]);
    return { code: status.code, stdout: this.stdout, stderr: this.stderr };
  }

  /**
   * Stops it gracefully: SIGTERM, up to `timeoutMs` to exit, then as
   * disposing does (SIGKILL). A server killed outright would orphan the
   * programs it runs.
   */
  async terminate(timeoutMs = 10_000): Promise<void> {
    this.kill("SIGTERM");
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.statusPromise,
      new Promise((resolve) => timer = setTimeout(resolve, timeoutMs)),
    ]);
    clearTimeout(timer);
    await this[Symbol.asyncDispose]();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.kill("SIGKILL");
    try {
      await this.child.stdin?.close();
    } catch {
      // Not piped, or closed.
    }
    await this.finished();
  }
}

/** How {@linkcode spawn} starts a program. */
export interface SpawnOptions {
  /** A script's Deno flags, e.g. `["--allow-net=127.0.0.1:0"]`, exactly as a user gives them. */
  permissions?: string[];
  /** The program's own arguments. */
  args?: string[];
  /** Pipe stdin (default: none). */
  stdin?: boolean;
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** A command that runs a script's `deno` for us, e.g. `["ip", "netns", "exec", "ns1"]`. */
  prefix?: string[];
}

/**
 * Starts `program` with piped stdout and stderr, as a
 * {@linkcode ScriptProcess} (wait for its ready line with `waitForStderr`,
 * stop it with `await using`): a script of this repository (a path ending
 * in `.ts`, e.g. `servers/echo.ts`), run by `deno run` with exactly
 * `permissions`; or any other command on PATH (a real peer such as `socat`
 * or `nc`).
 */
export function spawn(
  program: string,
  options: SpawnOptions = {},
): ScriptProcess {
  const script = program.endsWith(".ts");
  if (!script && (options.permissions || options.prefix)) {
    throw new TypeError(`${program}: permissions and prefix are for scripts`);
  }
  const [command, ...args] = script
    ? [
      ...(options.prefix ?? []),
      Deno.execPath(),
      "run",
      "--quiet",
      "--no-prompt",
      ...(options.permissions ?? []),
      repoPath(program),
      ...withTlsEngine(program, options.args ?? []),
    ]
    : [program, ...(options.args ?? [])];
  const child = new Deno.Command(command, {
    args,
    cwd: ROOT,
    stdin: options.stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...options.env },
  }).spawn();
  return new ScriptProcess(child);
}

/** Runs `script` to completion; returns exit code and output. */
export async function runScript(
  script: string,
  options: SpawnOptions & { input?: Uint8Array | string } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  await using proc = spawn(script, {
    ...options,
    stdin: options.input !== undefined,
  });
  if (options.input !== undefined) {
    const writer = proc.child.stdin.getWriter();
    await writer.write(
      typeof options.input === "string"
        ? new TextEncoder().encode(options.input)
        : options.input,
    );
    await writer.close();
  }
  return await proc.finished();
}

/** A server script started and listening. */
export interface StartedServer {
  proc: ScriptProcess;
  /** The address from its `listening on` line, e.g. `127.0.0.1:40000`. */
  address: string;
  /** The port in that address (0 for a Unix socket). */
  port: number;
}

/**
 * Starts a server script and waits for its first `listening on ADDRESS` line.
 */
export async function startServer(
  script: string,
  options: SpawnOptions,
): Promise<StartedServer & AsyncDisposable> {
  const proc = spawn(script, options);
  try {
    const match = await proc.waitForStderr(/^listening on (\S+)/);
    const address = match[1];
    const port = Number(/:(\d+)$/.exec(address)?.[1] ?? 0);
    return {
      proc,
      address,
      port,
      [Symbol.asyncDispose]: () => proc[Symbol.asyncDispose](),
    };
  } catch (error) {
    await proc[Symbol.asyncDispose]();
    throw error;
  }
}

/**
 * Starts servers/echo.ts with `--tls` (`--cert` and `--key` from `files`,
 * a {@linkcode TestCertificates}' server pair or another) on 127.0.0.1, a
 * free port, `extra` after; run with exactly its header's permissions,
 * plus `morePermissions`, under `prefix` if given.
 */
export function startTlsEcho(
  files: { cert: string; key: string },
  extra: string[] = [],
  options: { morePermissions?: string[]; prefix?: string[] } = {},
): Promise<StartedServer & AsyncDisposable> {
  return startServer("servers/echo.ts", {
    ...(options.prefix && { prefix: options.prefix }),
    permissions: [
      "--allow-net=127.0.0.1:0",
      `--allow-read=${files.cert},${files.key}`,
      ...(options.morePermissions ?? []),
    ],
    args: [
      "--hostname",
      "127.0.0.1",
      "--port",
      "0",
      "--tls",
      "--cert",
      files.cert,
      "--key",
      files.key,
      ...extra,
    ],
  });
}

/**
 * Starts servers/forward.ts with `args` (a ws:// or wss:// LISTEN and its
 * TARGET, flags before them) and exactly `permissions`, and waits for its
 * `listening on` line.
 */
export function startWebSocketBridge(
  args: string[],
  permissions: string[] = ["--allow-net=127.0.0.1"],
): Promise<StartedServer & AsyncDisposable> {
  return startServer("servers/forward.ts", { permissions, args });
}

/**
 * Starts servers/forward.ts from `listen` (default `tcp://127.0.0.1:0`) to
 * `target`, `args` before them, with exactly the header's permissions for
 * the two (or `permissions`).
 */
export function startForward(
  target: string,
  options: { args?: string[]; listen?: string; permissions?: string[] } = {},
): Promise<StartedServer & AsyncDisposable> {
  const listen = options.listen ?? "tcp://127.0.0.1:0";
  const grant = (endpoint: string) => endpoint.replace(/^tcp:\/\//, "");
  return startServer("servers/forward.ts", {
    permissions: options.permissions ??
      [`--allow-net=${grant(listen)},${grant(target)}`],
    args: [...(options.args ?? []), listen, target],
  });
}

/** A TLS connection to `port` on 127.0.0.1, trusting only the CA in the file `ca`. */
export function connectTls(port: number, ca: string): Promise<Deno.TlsConn> {
  return Deno.connectTls({
    hostname: "127.0.0.1",
    port,
    caCerts: [Deno.readTextFileSync(ca)],
  });
}

/** The local port of `conn` (the client's side, as a server logs it). */
export function localPort(conn: Deno.Conn): number {
  return (conn.localAddr as Deno.NetAddr).port;
}

/** Resolves true once `conn` is closed by its peer (EOF or reset), false after `ms`. */
export async function closedWithin(
  conn: Deno.Conn,
  ms: number,
): Promise<boolean> {
  const buffer = new Uint8Array(64 * 1024);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<false>((resolve) =>
    timer = setTimeout(() => resolve(false), ms)
  );
  const closed = (async () => {
    try {
      while ((await conn.read(buffer)) !== null) { /* drain */ }
    } catch {
      // A reset: closed too.
    }
    return true;
  })();
  try {
    return await Promise.race([closed, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A script's permissions to listen on, and own, the Unix socket `path`. */
export function unixPermissions(path: string): string[] {
  return [
    `--allow-net=unix:${path}`,
    `--allow-read=${path}`,
    `--allow-write=${path}`,
  ];
}

/** Runs `ip` with `args` (a network namespace's set-up), failing with its stderr. */
export async function ip(...args: string[]): Promise<void> {
  const { code, stderr } = await runCommand("ip", args);
  if (code !== 0) throw new Error(`ip ${args.join(" ")}: ${stderr}`);
}

/** Whether `port` can be bound on `hostname` over both TCP and UDP now. */
export function bindable(hostname: string, port: number): boolean {
  try {
    Deno.listen({ hostname, port }).close();
    Deno.listenDatagram({ transport: "udp", hostname, port }).close();
    return true;
  } catch {
    return false;
  }
}

/** Where {@linkcode freePort} looks: above every port a test or task names. */
const FREE_PORT_LOW = 20000;

/**
 * The lowest port the kernel hands out by itself (to a `port: 0` bind and
 * to every outgoing connection's source port): the first number of
 * `/proc/sys/net/ipv4/ip_local_port_range`, 32768 where it cannot be read.
 */
function ephemeralLow(): number {
  return ephemeralLowSeen ??= readEphemeralLow();
}

let ephemeralLowSeen: number | undefined;

/** Reads {@linkcode ephemeralLow}'s number, once a run. */
function readEphemeralLow(): number {
  try {
    const low = Number(
      Deno.readTextFileSync("/proc/sys/net/ipv4/ip_local_port_range")
        .trim().split(/\s+/)[0],
    );
    if (Number.isInteger(low) && low > FREE_PORT_LOW + 1000) return low;
  } catch {
    // Not Linux, or not readable: Linux's default.
  }
  return 32768;
}

/**
 * A port that was free a moment ago on `hostname` (TCP and UDP), for a
 * test that must name its port before a server binds it. It is drawn at
 * random from below the kernel's ephemeral range (see
 * {@linkcode ephemeralLow}), never from it: a port the kernel picked for a
 * `port: 0` bind could be handed out again as the source port of any
 * connection a test running beside this one makes before the server binds
 * it, and was (CI: "already in use" once in some hundred runs). Drawn from
 * below it, only another `freePort` can take it first, one chance in some
 * thousands a pair. `getAvailablePort` (`@std/net`) checks TCP on every
 * IPv4 address; it must also be {@linkcode bindable} on `hostname`, UDP
 * included (a UDP service or an IPv6-only listener may hold it).
 */
export function freePort(hostname = "127.0.0.1"): number {
  const span = ephemeralLow() - FREE_PORT_LOW;
  for (let i = 0; i < 50; i++) {
    const preferredPort = FREE_PORT_LOW + Math.floor(Math.random() * span);
    // It falls back to a port of the kernel's when the preferred one is taken.
    const port = getAvailablePort({ preferredPort });
    if (port === preferredPort && bindable(hostname, port)) return port;
  }
  throw new Error("no free port found");
}

const peerCache = new Map<string, boolean>();

/** Whether `command` is on PATH. */
export function hasCommand(command: string): boolean {
  let found = peerCache.get(command);
  if (found === undefined) {
    found = new Deno.Command("sh", {
      args: ["-c", `command -v ${command}`],
      stdout: "null",
      stderr: "null",
    }).outputSync().success;
    peerCache.set(command, found);
  }
  return found;
}

/**
 * For `Deno.test({ ignore })`: `true` (skip) when a peer is missing, after
 * printing why, so a skip is never silent and never passes.
 */
export function missing(...commands: string[]): boolean {
  const absent = commands.filter((c) => !hasCommand(c));
  if (absent.length > 0) {
    console.error(
      `SKIP: ${absent.join(", ")} not installed (.ci/run installs it)`,
    );
  }
  return absent.length > 0;
}

/** Reads `conn` to end of stream. */
export async function readAll(conn: Deno.Conn): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const buffer = new Uint8Array(65536);
  for (let n; (n = await conn.read(buffer)) !== null;) {
    chunks.push(buffer.slice(0, n));
  }
  return concat(chunks);
}

/** Runs a command to completion with optional stdin; returns its output. */
export async function runCommand(
  command: string,
  args: string[],
  input?: Uint8Array | string,
  timeoutMs = 30_000,
): Promise<{ code: number; stdout: Uint8Array; stderr: string }> {
  const child = new Deno.Command(command, {
    args,
    stdin: input === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // Exited.
    }
  }, timeoutMs);
  // Collect the output while writing the input: a peer that echoes (socat
  // to an echo server) blocks on a full stdout pipe otherwise, and then so
  // does our write to its stdin.
  const collecting = child.output();
  if (input !== undefined) {
    const writer = child.stdin.getWriter();
    try {
      await writer.write(
        typeof input === "string" ? new TextEncoder().encode(input) : input,
      );
      await writer.close();
    } catch {
      // It exited without reading all of its input; its output says why.
    }
  }
  const output = await collecting;
  clearTimeout(timer);
  return {
    code: output.code,
    stdout: output.stdout,
    stderr: decoder.decode(output.stderr),
  };
}

/** Where and what {@linkcode waitListening} looks for. */
export interface WaitListeningOptions {
  /** The port it must listen on; another program there fails at once. */
  port?: number;
  /**
   * What to look for: a TCP listener (default), a bound UDP socket, or any
   * of those or a Unix socket.
   */
  transport?: "tcp" | "udp" | "any";
  /** Look in this network namespace. */
  netns?: string;
  /** Give up after this long. Default 10 s. */
  timeoutMs?: number;
}

/**
 * Waits until process `pid` listens (on TCP, or has a bound UDP or Unix
 * socket, as `transport` says), seen with `ss`, without connecting to it: a peer that prints
 * nothing when ready is polled for, not slept for. With `port`, another
 * program on that port (it was free a moment ago, but other test runs
 * share the machine) fails the test at once instead of letting a client
 * talk to a stranger (a chargen server would never stop sending).
 */
export async function waitListening(
  pid: number,
  options: WaitListeningOptions = {},
): Promise<void> {
  const deadline = Date.now() + (options.timeoutMs ?? 10_000);
  const [command, ...prefix] = options.netns === undefined
    ? ["ss"]
    : ["ip", "netns", "exec", options.netns, "ss"];
  const args = [
    ...prefix,
    { tcp: "-Hltnp", udp: "-Hlunp", any: "-Hltuxnp" }[
      options.transport ?? "tcp"
    ],
    ...(options.port === undefined ? [] : [`sport = :${options.port}`]),
  ];
  const where = options.port === undefined ? "" : ` on ${options.port}`;
  while (true) {
    const { stdout } = await runCommand(command, args);
    const lines = decoder.decode(stdout).split("\n").filter((l) => l.trim());
    if (lines.some((line) => line.includes(`pid=${pid},`))) return;
    if (options.port !== undefined) {
      // A line without its process (`users:`) is a socket ss saw before
      // its owner's descriptors: ask again.
      assertEquals(
        lines.filter((line) => line.includes("users:")),
        [],
        `port ${options.port} is taken by another process`,
      );
    }
    if (Date.now() > deadline) {
      throw new AssertionError(`process ${pid} does not listen${where}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Deterministic pseudo-random bytes (xorshift), so failures reproduce. */
export function pseudoRandomBytes(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** Makes a closeable resource usable with `using` (DatagramConn lacks it). */
export function closing<T extends { close(): void }>(
  resource: T,
): T & Disposable {
  return Object.assign(resource, {
    [Symbol.dispose]() {
      try {
        resource.close();
      } catch {
        // Already closed.
      }
    },
  });
}

/**
 * An `output` for a server that writes what it receives (hello.ts and
 * udp.ts print each client's message): it keeps every chunk; `text()`
 * is all of them.
 */
export function memoryOutput(): {
  write(p: Uint8Array): Promise<number>;
  text(): string;
} {
  const chunks: Uint8Array[] = [];
  return {
    write(p) {
      chunks.push(p.slice());
      return Promise.resolve(p.byteLength);
    },
    text: () => chunks.map((c) => decoder.decode(c)).join(""),
  };
}

/** The next datagram on `socket`, or `null` when none comes within `ms`. */
export async function receiveWithin(
  socket: Deno.DatagramConn,
  ms: number,
): Promise<[Uint8Array, Deno.Addr] | null> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), ms);
  });
  const receiving = socket.receive();
  try {
    const result = await Promise.race([receiving, timeout]);
    if (result === null) {
      receiving.catch(() => {}); // Settles when the socket closes.
    }
    return result;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Asserts two byte arrays are equal (`equals` from `@std/bytes`), failing
 * with both lengths, the first differing offset and the bytes around it.
 * (`assertEquals` on megabytes that differ builds a diff of every element:
 * gigabytes of memory, minutes of CPU.)
 */
export function assertSameBytes(
  actual: Uint8Array,
  expected: Uint8Array,
  what = "bytes",
): void {
  if (equals(actual, expected)) return;
  const n = Math.min(actual.byteLength, expected.byteLength);
  let i = 0;
  while (i < n && actual[i] === expected[i]) i++;
  const from = Math.max(0, i - 8);
  const around = (bytes: Uint8Array) =>
    Array.from(
      bytes.subarray(from, i + 8),
      (b) => b.toString(16).padStart(2, "0"),
    ).join(" ") || "(none)";
  throw new AssertionError(
    `${what}: got ${actual.byteLength} bytes, expected ${expected.byteLength}; ` +
      `first difference at offset ${i}; bytes from offset ${from}:\n` +
      `  actual:   ${around(actual)}\n  expected: ${around(expected)}`,
  );
}

/** Certificates made by `openssl` for a test, in a temporary directory. */
export interface TestCertificates extends AsyncDisposable {
  /** The directory holding every file. */
  dir: string;
  /** The test CA's certificate (PEM file). */
  ca: string;
  /** The server certificate, signed by `ca`, for localhost, 127.0.0.1, ::1. */
  cert: string;
  /** The server's private key. */
  key: string;
  /** A CA that signed nothing here: verifying against it must fail. */
  wrongCa: string;
  /**
   * A client certificate `ca` signed (subject `C=DE, O=Example, Inc.,
   * CN=alice`: a comma, which DN formats write differently), and its key.
   */
  clientCert: string;
  clientKey: string;
  /** A client certificate the wrong CA signed (`CN=mallory`), and its key. */
  strangerCert: string;
  strangerKey: string;
}

/**
 * Makes a CA, a server certificate it signs (SAN localhost, 127.0.0.1,
 * ::1; ECDSA P-256) and an unrelated CA with `openssl`; the directory is
 * removed on dispose.
 */
export async function makeCertificates(): Promise<TestCertificates> {
  const dir = await Deno.makeTempDir({ prefix: "sockets-tls-" });
  const path = (name: string) => `${dir}/${name}`;
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
  const run = async (args: string[]) => {
    const { code, stderr } = await runCommand("openssl", args);
    if (code !== 0) throw new Error(`openssl ${args[0]} failed: ${stderr}`);
  };
  await Deno.writeTextFile(
    path("server.ext"),
    "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n" +
      "basicConstraints=critical,CA:FALSE\n" +
      "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
  );
  for (const name of ["ca", "wrong-ca"]) {
    await run([
      "req",
      "-x509",
      ...ec,
      "-nodes",
      "-days",
      "2",
      "-keyout",
      path(`${name}.key`),
      "-out",
      path(`${name}.pem`),
      "-subj",
      `/CN=sockets test ${name}`,
    ]);
  }
  await run([
    "req",
    ...ec,
    "-nodes",
    "-keyout",
    path("key.pem"),
    "-out",
    path("server.csr"),
    "-subj",
    "/CN=localhost",
  ]);
  await run([
    "x509",
    "-req",
    "-in",
    path("server.csr"),
    "-days",
    "2",
    "-CA",
    path("ca.pem"),
    "-CAkey",
    path("ca.key"),
    "-CAcreateserial",
    "-extfile",
    path("server.ext"),
    "-out",
    path("cert.pem"),
  ]);
  await Deno.writeTextFile(
    path("client.ext"),
    "basicConstraints=critical,CA:FALSE\n" +
      "keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
  );
  for (
    const [name, subject, ca] of [
      ["client", "/C=DE/O=Example, Inc./CN=alice", "ca"],
      ["stranger", "/CN=mallory", "wrong-ca"],
    ]
  ) {
    await run([
      "req",
      ...ec,
      "-nodes",
      "-keyout",
      path(`${name}.key`),
      "-out",
      path(`${name}.csr`),
      "-subj",
      subject,
    ]);
    await run([
      "x509",
      "-req",
      "-in",
      path(`${name}.csr`),
      "-days",
      "2",
      "-CA",
      path(`${ca}.pem`),
      "-CAkey",
      path(`${ca}.key`),
      "-CAcreateserial",
      "-extfile",
      path("client.ext"),
      "-out",
      path(`${name}.pem`),
    ]);
  }
  return {
    dir,
    clientCert: path("client.pem"),
    clientKey: path("client.key"),
    strangerCert: path("stranger.pem"),
    strangerKey: path("stranger.key"),
    ca: path("ca.pem"),
    cert: path("cert.pem"),
    key: path("key.pem"),
    wrongCa: path("wrong-ca.pem"),
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}

/**
 * Runs `script` with `args` and asserts the usage-error contract: exit 2,
 * nothing on stdout, and exactly one stderr line, matching `pattern`.
 */
export async function assertUsageError(
  script: string,
  permissions: string[],
  args: string[],
  pattern: RegExp,
): Promise<void> {
  const { code, stdout, stderr } = await runScript(script, {
    permissions,
    args,
  });
  const what = `${script} ${args.join(" ")}`;
  assertEquals(code, 2, `${what}: exit code; stderr: ${stderr}`);
  assertMatch(stderr, pattern, `${what}: stderr`);
  assertEquals(
    stderr.trimEnd().split("\n").length,
    1,
    `${what}: more than one stderr line: ${stderr}`,
  );
  assertEquals(stdout, "", `${what}: wrote to stdout`);
}

/**
 * Waits until `predicate` holds, polling every 20 ms: the one way the
 * tests wait for something to happen. `timeoutMs` only stops a hang (a
 * loaded machine is slow, not wrong); the error names `what` (a string,
 * or a function giving the state to show). Resolves to the ms it took.
 */
export async function eventually(
  predicate: () => boolean | Promise<boolean>,
  what: string | (() => string),
  timeoutMs = 10_000,
): Promise<number> {
  const started = performance.now();
  while (!(await predicate())) {
    if (performance.now() - started > timeoutMs) {
      throw new Error(
        `timed out waiting for ${typeof what === "string" ? what : what()}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return performance.now() - started;
}

/** Open file descriptors of process `pid` (Linux). */
export function descriptorCount(pid: number): number {
  let count = 0;
  for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) count++;
  return count;
}

/**
 * Process `pid`'s descriptor count once it is back to `baseline` (closes
 * finish a moment after what caused them), or what it is after 5 s.
 */
export async function settledDescriptorCount(
  pid: number,
  baseline: number,
): Promise<number> {
  await eventually(
    () => descriptorCount(pid) === baseline,
    "descriptors back",
    5000,
  ).catch(() => {});
  return descriptorCount(pid);
}

/**
 * A reader that hands out `bytes` in reads of the given sizes, in turn
 * (all at once when none are given), counting what it gave: how a
 * property test delivers a stream split at every point it likes.
 */
export function chunkedReader(
  bytes: Uint8Array,
  sizes: number[],
): { readonly consumed: number; read(p: Uint8Array): Promise<number | null> } {
  let at = 0;
  let i = 0;
  return {
    get consumed() {
      return at;
    },
    read(p: Uint8Array): Promise<number | null> {
      if (at >= bytes.byteLength) return Promise.resolve(null);
      const size = sizes.length ? sizes[i++ % sizes.length] : bytes.byteLength;
      const n = Math.min(size, p.byteLength, bytes.byteLength - at);
      p.set(bytes.subarray(at, at + n));
      at += n;
      return Promise.resolve(n);
    },
  };
}
