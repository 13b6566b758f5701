/**
 * `--workers N`: a TCP server served by N threads, each with its own
 * listener on the same port (`SO_REUSEPORT`, Linux: the kernel spreads new
 * connections over them). The main thread is worker 0; workers 1..N-1 are
 * Web Workers that run the main module again with the same arguments, so
 * they build the very same server from the very same flags. They share one
 * connection count (a `SharedArrayBuffer`, so `--max-connections` holds for
 * the group) and one shutdown: SIGINT/SIGTERM in the main thread stops all.
 * A worker reads its place (number, port) from its name and asks the main
 * thread for the shared count only when its script serves: importing this
 * module registers nothing and waits for nothing.
 *
 * Threads rather than processes: a Worker needs no `--allow-run`, only read
 * access to the modules it loads again
 * (`--allow-read=servers/echo.ts,mod.ts,lib`, and the mirror's directory
 * where Deno's `JSR_URL` is a `file:` mirror); without it, the server
 * stops at start with one line naming them all.
 *
 * @module
 */

import { escapeControlChars } from "./escape_control_chars.ts";
import { flushStderrLog, stderrLog } from "./log.ts";
import type {
  Server,
  ServerOptions,
  Service,
  StreamHandler,
} from "./server_options.ts";
import { StreamServer } from "./stream_server.ts";

/** A worker's place in its group, as the main thread named it. */
export interface WorkerPlace {
  /** This worker's number, 1..count-1 (the main thread is 0). */
  readonly index: number;
  /** Threads in the group, the main thread included. */
  readonly count: number;
  /** The port the main thread bound (the real one when it asked for 0). */
  readonly port: number;
}

/** Marks the Web Workers this module starts, among any others. */
const WORKER_NAME = "sockets-worker";

/** The name of worker `index`: its place, readable before any message. */
function workerName(place: WorkerPlace): string {
  return `${WORKER_NAME} ${place.index}/${place.count} port ${place.port}`;
}

/** The main thread's answer to a worker's `join`. */
interface InitMessage {
  type: "init";
  connections: SharedArrayBuffer;
}

// deno-lint-ignore no-explicit-any
const scope = globalThis as any;

/** This thread's place, once looked up (`null`: not a worker of a group). */
let place: WorkerPlace | null | undefined;

/**
 * In a worker this module started: its place in the group, read from the
 * worker's name (so the script's `serve()` binds the group's port at once).
 * `undefined` everywhere else. Nothing happens at import: no listener, no
 * waiting.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { workerPlace } from "./workers.ts";
 *
 * assertEquals(workerPlace(), undefined); // not a worker
 * ```
 */
export function workerPlace(): WorkerPlace | undefined {
  if (place === undefined) {
    const match = typeof scope.WorkerGlobalScope !== "undefined" &&
      scope instanceof scope.WorkerGlobalScope &&
      new RegExp(`^${WORKER_NAME} (\\d+)/(\\d+) port (\\d+)$`).exec(
        String(scope.name),
      );
    place = match
      ? {
        index: Number(match[1]),
        count: Number(match[2]),
        port: Number(match[3]),
      }
      : null;
  }
  return place ?? undefined;
}

/** Whether this worker's server reported to the main thread. */
let answered = false;

/**
 * In a worker of a group: asks the main thread for the group's connection
 * count, a `SharedArrayBuffer` (names carry no memory), and from then on
 * tells it when the worker exits before its server reported (its bind
 * failed: the script printed why), so the main thread does not wait for it.
 */
function joinGroup(): Promise<Int32Array> {
  scope.addEventListener("unload", () => {
    if (!answered) {
      scope.postMessage({ type: "failed", message: "exited before serving" });
    }
  });
  return new Promise((resolve) => {
    const onMessage = (event: MessageEvent<InitMessage>) => {
      if (event.data?.type !== "init") return;
      scope.removeEventListener("message", onMessage);
      resolve(new Int32Array(event.data.connections));
    };
    scope.addEventListener("message", onMessage);
    scope.postMessage({ type: "join" });
  });
}

/**
 * Turns a `--workers` value into a thread count: a whole number from 1 to
 * 256, or `auto` for one per CPU.
 *
 * @example
 * ```ts
 * import { assertEquals, assertThrows } from "@std/assert";
 * import { workerCount } from "./workers.ts";
 *
 * assertEquals(workerCount("2"), 2);
 * assertEquals(workerCount("auto"), navigator.hardwareConcurrency);
 * assertThrows(() => workerCount("0"), RangeError, "expected auto or a whole number from 1 to 256");
 * ```
 */
export function workerCount(value: string): number {
  if (value === "auto") return Math.max(1, navigator.hardwareConcurrency);
  if (!/^[0-9]+$/.test(value) || Number(value) < 1 || Number(value) > 256) {
    throw new RangeError(
      `invalid value '${value}' for --workers: expected auto or a whole number from 1 to 256`,
    );
  }
  return Number(value);
}

/** The part of a server a worker group needs: a `Server` is one. */
export interface GroupMember {
  /** Settles once the server listens; rejects when binding failed. */
  readonly ready: Promise<void>;
  /** Resolves once the server has stopped. */
  readonly finished: Promise<void>;
  /** Stops the server gracefully. */
  shutdown(): Promise<void>;
  /** TLS: reads its files again (see `Server.reloadTls`). */
  reloadTls?(): Promise<boolean>;
}

/**
 * In a worker of a group: tells the main thread once `server` is ready (or
 * failed to bind), shuts it down when the main thread says so, and tells the
 * main thread once it has finished.
 *
 * @example
 * ```ts
 * import { answerGroupShutdown } from "./workers.ts";
 *
 * // Outside a worker this does nothing.
 * answerGroupShutdown({
 *   ready: Promise.resolve(),
 *   finished: Promise.resolve(),
 *   shutdown: () => Promise.resolve(),
 * });
 * ```
 */
export function answerGroupShutdown(server: GroupMember): void {
  if (!workerPlace()) return;
  answered = true;
  scope.addEventListener("message", (event: MessageEvent) => {
    if (event.data?.type === "shutdown") server.shutdown();
    // The main thread read the same files first and logs the outcome once
    // every worker says it has its own.
    if (event.data?.type === "reload-tls") {
      (server.reloadTls?.() ?? Promise.resolve(false)).catch(() => false)
        .then(() => scope.postMessage({ type: "reloaded-tls" }));
    }
  });
  server.ready.then(
    () => scope.postMessage({ type: "ready" }),
    (error) =>
      scope.postMessage({ type: "failed", message: (error as Error).message }),
  );
  // This thread's log lines first: the main thread ends the worker on
  // "finished", which would cut a write still in flight. A script's
  // `runMain` may get there first (it flushes the log too, then calls
  // `Deno.exit`, which ends this worker): then "finished" goes on unload.
  let finished = false;
  let told = false;
  const tell = () => {
    if (told) return;
    told = true;
    scope.postMessage({ type: "finished" });
  };
  server.finished.then(() => {
    finished = true;
    return flushStderrLog();
  }).then(tell);
  scope.addEventListener("unload", () => {
    if (finished) tell();
  });
}

/** The Web Workers of a group, as the main thread sees them. */
export interface WorkerGroup {
  /** Settles when every worker listens (or failed; that is logged). */
  readonly ready: Promise<void>;
  /** Settles when every worker has finished (or died). */
  readonly finished: Promise<void>;
  /** Asks every worker to shut down gracefully; resolves like `finished`. */
  shutdown(): Promise<void>;
  /**
   * Asks every worker to read its TLS files again (SIGHUP); resolves once
   * each has (or has gone).
   */
  reloadTls(): Promise<void>;
}

/**
 * Starts workers 1..count-1 of a group whose main thread already listens on
 * `port` with `reusePort`. Each runs `module` (default: the main module)
 * again, with the same `Deno.args`. `log` hears about a worker that dies.
 *
 * @example
 * ```ts ignore
 * import { spawnWorkers } from "./workers.ts";
 *
 * const connections = new Int32Array(new SharedArrayBuffer(4));
 * const group = spawnWorkers(2, 15000, connections, console.error);
 * await group.shutdown();
 * ```
 */
export function spawnWorkers(
  count: number,
  port: number,
  connections: Int32Array,
  log: (line: string) => void,
  module: string = Deno.mainModule,
): WorkerGroup {
  checkReadable(module);
  const done: Promise<void>[] = [];
  const ready: Promise<void>[] = [];
  const workers: Worker[] = [];
  /** A worker's answer to "reload-tls" awaited, until it has gone. */
  const reloaded = new Map<Worker, () => void>();
  for (let index = 1; index < count; index++) {
    const worker = new Worker(module, {
      type: "module",
      name: workerName({ index, count, port }),
    });
    workers.push(worker);
    let listening!: () => void;
    ready.push(new Promise<void>((resolve) => listening = resolve));
    done.push(
      new Promise<void>((resolve) => {
        const failed = (message: string) => {
          log(`worker ${index} failed: ${escapeControlChars(message)}`);
          listening();
          resolve();
        };
        worker.addEventListener("message", (event) => {
          const type = event.data?.type;
          if (type === "join") {
            const init: InitMessage = {
              type: "init",
              connections: connections.buffer as SharedArrayBuffer,
            };
            worker.postMessage(init);
          } else if (type === "ready") listening();
          else if (type === "reloaded-tls") reloaded.get(worker)?.();
          else if (type === "finished") resolve();
          else if (type === "failed") failed(event.data.message);
        });
        worker.addEventListener("error", (event) => {
          event.preventDefault();
          failed(event.message);
        });
      }).then(() => {
        worker.terminate();
        reloaded.get(worker)?.();
        reloaded.delete(worker);
      }),
    );
    reloaded.set(worker, () => {});
  }
  const finished = Promise.all(done).then(() => {});
  let asked = false;
  return {
    ready: Promise.all(ready).then(() => {}),
    finished,
    shutdown() {
      if (!asked) {
        asked = true;
        for (const worker of workers) worker.postMessage({ type: "shutdown" });
      }
      return finished;
    },
    reloadTls() {
      return Promise.all(
        [...reloaded.keys()].map((worker) =>
          new Promise<void>((resolve) => {
            reloaded.set(worker, resolve);
            worker.postMessage({ type: "reload-tls" });
          })
        ),
      ).then(() => {});
    },
  };
}

/**
 * The JSR packages the scripts here load at run time (the others are for
 * tests): a worker loads them again.
 */
const JSR_MODULES = ["@std/cli/parse-args", "@std/bytes", "@std/streams"];

/**
 * Where a worker reads the JSR packages from when they are files (Deno's
 * `JSR_URL` is a `file:` mirror): the mirror's directory, the part of a
 * module's path before `/@scope/name/version/`. Empty when JSR is reached
 * over https (a worker needs no permission to load those).
 */
function jsrMirrorDirs(): string[] {
  const dirs = new Set<string>();
  for (const specifier of JSR_MODULES) {
    let url: string;
    try {
      url = import.meta.resolve(specifier);
    } catch {
      continue; // Not in this package's import map: not loaded either.
    }
    if (!url.startsWith("file:")) continue;
    const path = decodeURIComponent(new URL(url).pathname);
    const package_ = /^(.*)\/@[^/]+\/[^/]+\/[^/]+\/[^/]+/.exec(path);
    dirs.add(package_ ? package_[1] : path.replace(/\/[^/]*$/, ""));
  }
  return [...dirs];
}

/**
 * A worker loads its modules as files, under --allow-read: the script, and
 * `mod.ts` and `lib/` that scripts here import, and the JSR packages when
 * they come from a `file:` mirror. Without that it dies later with a
 * stack trace; say it at start, in one line.
 */
function checkReadable(module: string): void {
  if (!module.startsWith("file:")) return;
  const paths = [
    new URL(module).pathname,
    new URL("../mod.ts", import.meta.url).pathname,
    new URL(".", import.meta.url).pathname.replace(/\/$/, ""),
  ].map(decodeURIComponent).concat(jsrMirrorDirs());
  const missing = paths.filter((path) =>
    Deno.permissions.querySync({ name: "read", path }).state !== "granted"
  );
  if (missing.length > 0) {
    throw new Deno.errors.NotCapable(
      `--workers needs read access to the modules each worker loads: add --allow-read=${
        paths.join(",")
      }`,
    );
  }
}

/**
 * A TCP server on `options.workers` threads: this thread listens first (so
 * port 0 becomes a real port), then starts the others on that port. In a
 * worker of the group, the same call joins the group instead.
 */
export function serveGroup(
  service: Service,
  handler: StreamHandler,
  options: ServerOptions,
): Server {
  const place = workerPlace();
  const connections = place ? undefined : new Int32Array(
    new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT),
  );
  const label = `${options.label ? `${options.label} ` : ""}worker ${
    place?.index ?? 0
  }`;
  const server = new StreamServer(service, handler, "tcp", {
    ...options,
    label,
    port: place?.port ?? options.port,
  }, { connections: connections ? Promise.resolve(connections) : joinGroup() });
  if (place) {
    answerGroupShutdown(server);
    return server;
  }
  const log = options.log ?? stderrLog;
  const group = spawnWorkers(
    options.workers!,
    (server.addr as Deno.NetAddr).port,
    connections!,
    log,
  );
  const finished = Promise.all([server.finished, group.finished]).then(
    () => {},
  );
  const shutdown = () =>
    Promise.all([server.shutdown(), group.shutdown()]).then(() => {});
  return {
    addr: server.addr,
    ready: Promise.all([server.ready, group.ready]).then(() => {}),
    finished,
    // A worker's listener is closed once that worker has finished.
    socketClosed: Promise.all([server.socketClosed, group.finished]).then(
      () => {},
    ),
    shutdown,
    // This thread first: its outcome (the files read, checked) is the
    // one logged; the workers read the same files.
    reloadTls: () =>
      server.reloadTls().then(async (reloaded) => {
        if (reloaded) await group.reloadTls();
        return reloaded;
      }),
    [Symbol.asyncDispose]: shutdown,
  };
}
