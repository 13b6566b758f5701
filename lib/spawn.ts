/**
 * A program per connection, as tcpserver, `ncat -e` and socat's `EXEC` run
 * one: {@linkcode runProgram} starts the program with the connection on
 * its stdin and stdout (pipes, no shell), the environment ucspi-tcp sets
 * ({@linkcode connectionEnv}), half-close both ways, and ends it with
 * SIGTERM, then SIGKILL, when the client goes; it returns only once the
 * program is reaped. {@linkcode checkProgram} refuses, once at start, a
 * program that cannot run.
 *
 * @module
 */

import { unmapIPv4 } from "./address.ts";
import { type DepartureWatch, watchDeparture } from "./departure.ts";
import { writeAll } from "./io.ts";
import type { Log } from "./log.ts";
import { withoutOsError } from "./os_error.ts";
import { notePermission, permissionHint } from "./main.ts";
import type { ConnectionContext } from "./server_options.ts";
import { checkLinesPerSecond, StderrLines } from "./stderr_lines.ts";
import { tlsSessionEnv } from "./tls_peer.ts";

// For users of this module (the `./spawn` export): the types its
// functions take, and how a program's stderr becomes log lines.
export type { Log } from "./log.ts";
export type { ConnectionContext } from "./server_options.ts";
export {
  checkLinesPerSecond,
  DEFAULT_STDERR_LINES_PER_SECOND,
  MAX_STDERR_LINE,
  StderrLines,
} from "./stderr_lines.ts";

/** What to run for each connection, and how. */
export interface ProgramSpec {
  /**
   * The program: a path, or a name Deno finds on PATH when it grants
   * `--allow-run=NAME`. Run directly, never through a shell.
   */
  program: string;
  /** Its arguments, exactly as given. Default none. */
  args?: readonly string[];
  /**
   * Variables to add to its environment. The connection's own
   * ({@linkcode connectionEnv}) are set after these, as tcpserver sets its
   * own last.
   */
  env?: Readonly<Record<string, string>>;
  /**
   * Start from an empty environment: the program sees `env` and the
   * connection's variables only (not even `PATH`). Default `false`: it
   * inherits the server's environment.
   */
  clearEnv?: boolean;
  /** Send what the program writes on stderr to the client, not to the log. */
  stderrToClient?: boolean;
  /**
   * Most lines a second of its stderr logged, in bursts of as many; the
   * rest are counted (see {@linkcode StderrLines}). 0: no limit. Default
   * `DEFAULT_STDERR_LINES_PER_SECOND`, in `stderr_lines.ts`.
   */
  stderrLinesPerSecond?: number;
  /**
   * Once the program has been sent SIGTERM (its client went away), how long
   * it has to exit before SIGKILL, in ms. Default
   * {@linkcode DEFAULT_KILL_AFTER_MS}.
   */
  killAfterMs?: number;
}

/** SIGTERM to SIGKILL unless `killAfterMs` says otherwise: 2 s. */
export const DEFAULT_KILL_AFTER_MS = 2000;

/**
 * The program cannot run (not found, not executable, not allowed): said
 * once, at start, instead of once per client.
 *
 * @example
 * ```ts
 * import { checkProgram, ProgramError } from "./spawn.ts";
 *
 * try {
 *   checkProgram("/nonexistent/program");
 *   throw new Error("accepted a missing program");
 * } catch (error) {
 *   if (!(error instanceof ProgramError)) throw error;
 * }
 * ```
 */
export class ProgramError extends Error {
  /** The program as given. */
  readonly program: string;

  /** Builds the error; `message` says what is wrong and what to do. */
  constructor(program: string, message: string) {
    super(message);
    this.name = "ProgramError";
    this.program = program;
  }
}

/**
 * Checks, before any client comes, that `program` may and can run with
 * `env` added to its environment: Deno must grant `--allow-run` for it
 * (for a bare name, Deno grants that only once it found it on PATH); a
 * path must name an executable file, which takes `--allow-read=PATH` to
 * see; `LD_*` and `DYLD_*` variables take unrestricted `--allow-run` (Deno
 * refuses to spawn with them otherwise). Throws {@linkcode ProgramError}.
 *
 * @example
 * ```ts ignore
 * import { checkProgram } from "./spawn.ts";
 *
 * checkProgram("cat"); // with --allow-run=cat
 * ```
 */
export function checkProgram(
  program: string,
  env: Readonly<Record<string, string>> = {},
): void {
  if (program === "" || program.includes("\0")) {
    throw new ProgramError(program, `invalid program name '${program}'`);
  }
  const loader = Object.keys(env).find((name) => /^(LD|DYLD)_/.test(name));
  if (
    loader !== undefined &&
    Deno.permissions.querySync({ name: "run" }).state !== "granted"
  ) {
    throw new ProgramError(
      program,
      `the program's environment may hold ${loader} only with unrestricted --allow-run (Deno refuses to spawn with it otherwise)`,
    );
  }
  const run = Deno.permissions.querySync({ name: "run", command: program });
  if (run.state !== "granted") {
    // A program given by path is also read, to check it (below).
    if (program.includes("/")) notePermission("--allow-read", program);
    const hint = permissionHint("--allow-run", [program]);
    throw new ProgramError(
      program,
      program.includes("/")
        ? `not allowed to run ${program}: ${hint}`
        : `cannot run ${program}: not found on PATH, or not allowed (${hint})`,
    );
  }
  notePermission("--allow-run", program);
  const path = program.includes("/") ? program : findOnPath(program);
  if (path === undefined) return;
  if (
    Deno.permissions.querySync({ name: "read", path }).state !== "granted"
  ) {
    throw new ProgramError(
      program,
      `cannot check that ${path} is executable: ${
        permissionHint("--allow-read", [path])
      }`,
    );
  }
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new ProgramError(program, `${path}: no such file`);
    }
    throw new ProgramError(
      program,
      `${path}: ${withoutOsError((error as Error).message)}`,
    );
  }
  if (!info.isFile) {
    throw new ProgramError(program, `${path}: not a file`);
  }
  if (info.mode !== null && (info.mode & 0o111) === 0) {
    throw new ProgramError(program, `${path}: not executable`);
  }
}

/**
 * Where a bare program name is on PATH, when the server may look (with
 * unrestricted `--allow-run`, Deno did not look for us); `undefined` when
 * it may not: then a missing program shows at the first client.
 */
function findOnPath(name: string): string | undefined {
  const granted = (descriptor: Deno.PermissionDescriptor) =>
    Deno.permissions.querySync(descriptor).state === "granted";
  // `--allow-run=NAME` grants only once Deno found NAME on PATH.
  if (!granted({ name: "run" })) return undefined;
  if (!granted({ name: "env", variable: "PATH" })) return undefined;
  const dirs = (Deno.env.get("PATH") ?? "").split(":").filter(Boolean);
  for (const dir of dirs) {
    const path = `${dir}/${name}`;
    if (!granted({ name: "read", path })) return undefined;
    try {
      const info = Deno.statSync(path);
      if (info.isFile && (info.mode === null || (info.mode & 0o111) !== 0)) {
        return path;
      }
    } catch {
      // Not in this directory.
    }
  }
  throw new ProgramError(name, `cannot run ${name}: not found on PATH`);
}

/**
 * The variables a program learns its connection from, named as ucspi-tcp's
 * tcpserver names them: `PROTO=TCP`, `TCPLOCALIP`, `TCPLOCALPORT`,
 * `TCPREMOTEIP`, `TCPREMOTEPORT` (an IPv4-mapped IPv6 address as plain
 * IPv4). An IPv6 peer gets `PROTO=TCP6` and each value under both names
 * (`TCPREMOTEIP` and `TCP6REMOTEIP`...), as tcpserver's IPv6 build does.
 * No name lookups: no `TCPLOCALHOST`, `TCPREMOTEHOST` or `TCPREMOTEINFO`
 * (tcpserver `-H -R` with no `-l`). A Unix socket: `PROTO=UNIX`,
 * `UNIXLOCALPATH` and `UNIXLOCALPID` (the server's), as ucspi-unix.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { connectionEnv } from "./spawn.ts";
 *
 * assertEquals(
 *   connectionEnv(
 *     { transport: "tcp", hostname: "::ffff:127.0.0.1", port: 8000 },
 *     { transport: "tcp", hostname: "::ffff:127.0.0.1", port: 40000 },
 *   ),
 *   {
 *     PROTO: "TCP",
 *     TCPLOCALIP: "127.0.0.1",
 *     TCPLOCALPORT: "8000",
 *     TCPREMOTEIP: "127.0.0.1",
 *     TCPREMOTEPORT: "40000",
 *   },
 * );
 * ```
 */
export function connectionEnv(
  local: Deno.Addr,
  remote: Deno.Addr,
): Record<string, string> {
  if (local.transport === "unix" || local.transport === "unixpacket") {
    return {
      PROTO: "UNIX",
      UNIXLOCALPATH: (local as Deno.UnixAddr).path ?? "",
      UNIXLOCALPID: String(Deno.pid),
    };
  }
  if (!("hostname" in local) || !("hostname" in remote)) return {};
  const localIp = unmapIPv4(local.hostname);
  const remoteIp = unmapIPv4(remote.hostname);
  const values = {
    LOCALIP: localIp,
    LOCALPORT: String(local.port),
    REMOTEIP: remoteIp,
    REMOTEPORT: String(remote.port),
  };
  const env: Record<string, string> = {
    PROTO: remoteIp.includes(":") ? "TCP6" : "TCP",
  };
  for (const [name, value] of Object.entries(values)) env[`TCP${name}`] = value;
  if (env.PROTO === "TCP6") {
    for (const [name, value] of Object.entries(values)) {
      env[`TCP6${name}`] = value;
    }
  }
  return env;
}

/** How a program's run ended, for the log. */
export interface ProgramOutcome {
  /** Its process id. */
  pid: number;
  /** How it exited. */
  status: Deno.CommandStatus;
  /** The last signal this sent it (its client went away), if any. */
  signalled?: "SIGTERM" | "SIGKILL";
  /** Why it was signalled: the client's error, or the server closing it. */
  reason?: string;
}

/**
 * The program could not be started (`EAGAIN`, `EMFILE`, a program removed
 * since start): that client is refused, the server goes on.
 *
 * @example
 * ```ts
 * import { SpawnError } from "./spawn.ts";
 *
 * const error = new SpawnError("cannot start cat: Too many open files", null);
 * if (error.name !== "SpawnError") throw error;
 * ```
 */
export class SpawnError extends Error {
  /** Builds the error; `cause` is Deno's. */
  constructor(message: string, cause: unknown) {
    super(message, { cause });
    this.name = "SpawnError";
  }
}

/**
 * Told when a program starts and when it is reaped: how the stats
 * (`ProgramMetrics` in `server_metrics.ts`) count programs.
 */
export interface ProgramWatch {
  /** The program started. */
  started(): void;
  /** The program started was reaped, with `status`. */
  ended(status: Deno.CommandStatus): void;
}

/** Takes one stderr line of the program with process id `pid`. */
export type StderrLog = (line: string, pid: number) => void;

/** The client-to-program buffer: small at first, large once a read fills it. */
const SMALL_BUFFER = 4 * 1024;
const LARGE_BUFFER = 64 * 1024;

/**
 * Runs `spec.program` for one connection, the connection on its stdin and
 * stdout, and resolves once it has exited and been reaped, with the
 * connection closed:
 *
 * - the client's EOF closes the program's stdin (half-close); the program
 *   closing its stdout half-closes the connection;
 * - the program exiting ends the connection once its output is sent
 *   (output that a background process of it holds open is cut once none
 *   came for `killAfterMs`);
 * - a client that goes away (a reset, a failed read or write, or the
 *   server closing the connection: idle timeout, shutdown) gets the
 *   program SIGTERM, then SIGKILL after `killAfterMs`; a reset is noticed
 *   within 1 to 2 s even while the program does not read its bytes (see
 *   `watchDeparture` in `departure.ts`);
 * - a client that closes without a reset (a FIN) is one that half-closed:
 *   the program's stdin is closed, and a program that then neither reads
 *   nor writes runs until it ends (its next write meets the client's
 *   reset): the server cannot tell that client from one still reading;
 * - stderr lines go to `stderrLog` (as {@linkcode StderrLines} makes
 *   them: in pieces of at most 1 KiB, control characters escaped, at most
 *   `stderrLinesPerSecond` a second and the rest counted), or to the
 *   client with `stderrToClient`.
 *
 * Aborting `stop` ends the program as if its client had gone. Throws
 * {@linkcode SpawnError} when the program cannot be started. `watch`, if
 * given, hears of the start and the end.
 *
 * @example Run `cat` for one connection
 * ```ts ignore
 * import { runProgram } from "./spawn.ts";
 *
 * const outcome = await runProgram(conn, context, { program: "cat" }, console.error);
 * console.log(outcome.status.code);
 * ```
 */
export async function runProgram(
  conn: Deno.Conn,
  context: ConnectionContext,
  spec: ProgramSpec,
  stderrLog: StderrLog,
  stop?: AbortSignal,
  watch?: ProgramWatch,
): Promise<ProgramOutcome> {
  // Before the spawn: a bad limit must not leave a program running.
  if (spec.stderrLinesPerSecond !== undefined) {
    checkLinesPerSecond(spec.stderrLinesPerSecond);
  }
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(spec.program, {
      args: [...(spec.args ?? [])],
      env: {
        ...spec.env,
        // Behind a proxy (`acceptProxy`): the client and the address it
        // reached, from the PROXY header, as tcpserver listening there
        // would have set them.
        ...connectionEnv(context.localAddr, context.remoteAddr),
        // Over TLS: mod_ssl's and sslserver's SSL_* variables.
        ...(context.tls && tlsSessionEnv(context.tls)),
      },
      clearEnv: spec.clearEnv ?? false,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    // Deno says `Failed to spawn 'PROGRAM': REASON`: keep the reason.
    const reason = describe(error).replace(/^Failed to spawn '.*': /, "");
    throw new SpawnError(`cannot start ${spec.program}: ${reason}`, error);
  }
  const session = new Session(
    conn,
    context,
    child,
    spec.killAfterMs ?? DEFAULT_KILL_AFTER_MS,
  );
  watch?.started();
  const onStop = () => session.stop("the server is stopping");
  stop?.addEventListener("abort", onStop, { once: true });
  if (stop?.aborted) onStop();
  try {
    const outcome = await session.run(
      spec.stderrToClient ?? false,
      stderrLog,
      spec.stderrLinesPerSecond,
    );
    watch?.ended(outcome.status);
    return outcome;
  } finally {
    stop?.removeEventListener("abort", onStop);
  }
}

type Reader = ReadableStreamDefaultReader<Uint8Array>;

/** One program and its connection: the pumps between them, and the end. */
class Session {
  readonly #conn: Deno.Conn;
  readonly #context: ConnectionContext;
  readonly #child: Deno.ChildProcess;
  readonly #killAfterMs: number;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  readonly #stdout: Reader;
  readonly #stderr: Reader;
  readonly #closeConn: () => void;
  /** Notices the client's reset while its bytes wait on the program. */
  readonly #departure: DepartureWatch;
  /** Writes to the connection, one after another (stdout and stderr share it). */
  #sending: Promise<void> = Promise.resolve();
  /** Writes to the connection under way. */
  #busySending = 0;
  /** Chunks of output read so far, to tell flowing output from a stall. */
  #chunksRead = 0;
  #exited = false;
  /** Set once nothing more goes to the client (it went, or the program ended). */
  #ended = false;
  #signalled?: "SIGTERM" | "SIGKILL";
  #reason?: string;
  #killTimer?: ReturnType<typeof setTimeout>;

  constructor(
    conn: Deno.Conn,
    context: ConnectionContext,
    child: Deno.ChildProcess,
    killAfterMs: number,
  ) {
    this.#conn = conn;
    this.#context = context;
    this.#child = child;
    this.#killAfterMs = killAfterMs;
    this.#stdin = child.stdin.getWriter();
    this.#stdout = child.stdout.getReader();
    this.#stderr = child.stderr.getReader();
    // The server closes a connection itself (idle timeout, shutdown's
    // grace over) by calling its close(): hook that to hear of it at once,
    // since the program may be running with no read pending on the socket
    // (its client sent EOF) and nothing else would notice.
    const close = conn.close;
    let closed = false;
    // Closed once: a second close would throw (and build an error, with
    // its stack, per connection) when the server closes it after us.
    this.#closeConn = () => {
      if (closed) return;
      closed = true;
      close.call(conn);
    };
    conn.close = () => {
      this.#clientGone("closed by the server");
      this.#closeConn();
    };
    this.#departure = watchDeparture(
      conn,
      (error) => this.#clientGone(describe(error)),
    );
  }

  async run(
    stderrToClient: boolean,
    stderrLog: StderrLog,
    stderrLinesPerSecond?: number,
  ): Promise<ProgramOutcome> {
    const pid = this.#child.pid;
    const inbound = this.#pumpIn();
    const stdoutDone = this.#pumpOut(this.#stdout);
    const stderrDone = stderrToClient
      ? this.#pumpOut(this.#stderr)
      : this.#pumpLog(
        this.#stderr,
        new StderrLines((line) => stderrLog(line, pid), stderrLinesPerSecond),
      );
    // The program closing stdout (and stderr, when the client gets that
    // too) half-closes the connection: the client sees EOF, may still send.
    const outputDone = Promise.all([
      stdoutDone,
      stderrToClient ? stderrDone : true,
    ]).then(async ([out, err]) => {
      if (!out || !err || this.#ended) return;
      await this.#sending;
      this.#departure.writeShut();
      await this.#conn.closeWrite().catch(() => {});
    });
    const status = await this.#child.status;
    this.#exited = true;
    clearTimeout(this.#killTimer);
    await this.#drain(Promise.all([outputDone, stderrDone]));
    this.#ended = true;
    await this.#sending;
    try {
      this.#closeConn();
    } catch {
      // Closed already.
    }
    // Nobody reads stdin any more; a write stuck on a full pipe (a
    // background process holds it and does not read) must not hold us.
    this.#stdin.abort().catch(() => {});
    await inbound;
    this.#departure[Symbol.dispose]();
    return {
      pid,
      status,
      ...(this.#signalled && { signalled: this.#signalled }),
      ...(this.#reason && { reason: this.#reason }),
    };
  }

  /** Ends the program as if its client had gone. */
  stop(reason: string): void {
    this.#clientGone(reason);
  }

  /** The client went away: SIGTERM now, SIGKILL after the grace. */
  #clientGone(reason: string): void {
    if (this.#ended) return;
    this.#ended = true;
    // Its output has nowhere to go: the program's next write fails
    // (SIGPIPE), as one to a closed socket would.
    this.#stdout.cancel().catch(() => {});
    if (this.#exited) return;
    this.#reason = reason;
    this.#signal("SIGTERM");
    this.#killTimer = setTimeout(() => {
      if (!this.#exited) this.#signal("SIGKILL");
    }, this.#killAfterMs);
  }

  #signal(signal: "SIGTERM" | "SIGKILL"): void {
    this.#signalled = signal;
    try {
      this.#child.kill(signal);
    } catch {
      // Exited meanwhile.
    }
  }

  /** The connection to stdin; the client's EOF closes stdin. */
  async #pumpIn(): Promise<void> {
    // Most programs read a line or nothing: a connection costs a small
    // buffer (zeroed at each spawn: memset was 2% of a busy server's CPU
    // with 64 KiB), and earns the large one with a read that fills it.
    let buffer = new Uint8Array(SMALL_BUFFER);
    while (true) {
      let n: number | null;
      try {
        n = await this.#conn.read(buffer);
      } catch (error) {
        this.#clientGone(describe(error));
        break;
      }
      if (n === null) break;
      this.#context.bytesIn += n;
      this.#context.active();
      // Awaited before the next read, so one buffer serves, and a program
      // that does not read stops us reading from its client; meanwhile
      // the watch notices the client resetting, which no read would.
      this.#departure.notReading();
      try {
        await this.#stdin.write(buffer.subarray(0, n));
      } catch {
        // It closed stdin or exited: its client's bytes have nowhere to
        // go. Stop reading them, as from a socket nobody reads.
        return;
      }
      this.#departure.reading();
      if (n === buffer.byteLength && n < LARGE_BUFFER) {
        buffer = new Uint8Array(LARGE_BUFFER);
      }
    }
    await this.#stdin.close().catch(() => {});
  }

  /** Program output to the connection; resolves `true` at its EOF. */
  async #pumpOut(reader: Reader): Promise<boolean> {
    while (true) {
      const chunk = await this.#nextChunk(reader);
      if (chunk === null) return !this.#ended;
      if (this.#ended) break;
      // stdout and stderr (to the client) take turns on the connection.
      const send = this.#sending.then(() => this.#send(chunk));
      this.#sending = send;
      await send;
      if (this.#ended) break;
    }
    await reader.cancel().catch(() => {});
    return false;
  }

  async #send(chunk: Uint8Array): Promise<void> {
    if (this.#ended) return;
    this.#busySending++;
    try {
      await writeAll(this.#conn, chunk);
      this.#context.bytesOut += chunk.byteLength;
      this.#context.active();
    } catch (error) {
      this.#clientGone(describe(error));
    } finally {
      this.#busySending--;
    }
  }

  /** stderr to the log, a line at a time. */
  async #pumpLog(reader: Reader, lines: StderrLines): Promise<boolean> {
    while (true) {
      const chunk = await this.#nextChunk(reader);
      if (chunk === null) break;
      lines.write(chunk);
    }
    lines.end();
    return true;
  }

  /** The next chunk of program output, or `null` at its EOF (or a cancel). */
  async #nextChunk(reader: Reader): Promise<Uint8Array | null> {
    try {
      const { done, value } = await reader.read();
      if (done) return null;
      this.#chunksRead++;
      return value;
    } catch {
      return null;
    }
  }

  /**
   * After the program exited, waits for its output to be sent: for as long
   * as output flows or waits on a slow client; once none came for
   * `killAfterMs` with nothing being sent (a background process of the
   * program holds the pipes open), cancels the rest.
   */
  async #drain(done: Promise<unknown>): Promise<void> {
    let finished = false;
    done.then(() => finished = true, () => finished = true);
    while (!finished) {
      const read = this.#chunksRead;
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        done,
        new Promise((resolve) =>
          timer = setTimeout(resolve, this.#killAfterMs)
        ),
      ]);
      clearTimeout(timer);
      if (finished) return;
      if (this.#chunksRead === read && this.#busySending === 0) {
        this.#ended = true;
        this.#stdout.cancel().catch(() => {});
        this.#stderr.cancel().catch(() => {});
        await done.catch(() => {});
        return;
      }
    }
  }
}

function describe(error: unknown): string {
  const message = (error as Error)?.message;
  return message === undefined ? String(error) : withoutOsError(message);
}

/**
 * A program's exit as a log phrase: `exited 0`, `killed by SIGTERM`.
 *
 * @example
 * ```ts
 * import { describeStatus } from "./spawn.ts";
 *
 * const phrase = describeStatus({ success: false, code: 143, signal: "SIGTERM" });
 * if (phrase !== "killed by SIGTERM") throw new Error(phrase);
 * ```
 */
export function describeStatus(status: Deno.CommandStatus): string {
  return status.signal ? `killed by ${status.signal}` : `exited ${status.code}`;
}

/**
 * The log line for a program that did not end on its own with exit 0, or
 * `undefined` for one that did: `127.0.0.1:5000 cat[42]: exited 1`,
 * `... killed by SIGKILL (SIGTERM ignored for 2 s; client: Connection reset by peer)`.
 *
 * @example
 * ```ts
 * import { outcomeLine } from "./spawn.ts";
 *
 * const status = { success: true, code: 0, signal: null };
 * if (outcomeLine("127.0.0.1:5000", "cat", { pid: 42, status }) !== undefined) {
 *   throw new Error("logged a clean exit");
 * }
 * ```
 */
export function outcomeLine(
  peer: string,
  name: string,
  outcome: ProgramOutcome,
  killAfterMs: number = DEFAULT_KILL_AFTER_MS,
): string | undefined {
  const { pid, status, signalled, reason } = outcome;
  if (status.success && !signalled) return undefined;
  let line = `${peer} ${name}[${pid}]: ${describeStatus(status)}`;
  if (signalled === "SIGKILL") {
    line += ` (SIGTERM ignored for ${killAfterMs / 1000} s)`;
  }
  if (reason) line += ` (client: ${reason})`;
  return line;
}

/**
 * A {@linkcode StderrLog} that writes each line to `log` after
 * `PEER NAME[PID]: `.
 *
 * @example
 * ```ts
 * import { stderrLogTo } from "./spawn.ts";
 *
 * const lines: string[] = [];
 * stderrLogTo((line) => lines.push(line), "127.0.0.1:5000", "cat")("oops", 42);
 * if (lines[0] !== "127.0.0.1:5000 cat[42]: oops") throw new Error(lines[0]);
 * ```
 */
export function stderrLogTo(log: Log, peer: string, name: string): StderrLog {
  return (line, pid) => log(`${peer} ${name}[${pid}]: ${line}`);
}
