/**
 * The shell sessions the README and the scripts' module docs show, run as a
 * user would type them: every `$ command` line of every ```sh block, as a
 * user who is not root (`setpriv` to `nobody`; a command marked
 * `# as root` runs as root), in a network namespace of its own (so the
 * scripts' fixed ports are free), from a copy of the repository that
 * user owns, with `deno install -g` going to that user's home. What the
 * docs show under a command is checked against what it prints, so the
 * docs cannot drift from the commands.
 *
 * The session format, as a reader sees it:
 *
 * - `$ COMMAND` runs COMMAND with `sh -c`, stdout and stderr together (as
 *   a terminal shows them); a `\` at the end of a line continues it.
 * - `$ COMMAND &` starts COMMAND in the background; the lines under it are
 *   waited for in its output, in any order (the server's `listening on
 *   ...`; stdout and stderr interleave as they will); it gets
 *   SIGTERM when the block ends and must then exit 0.
 * - The lines under a foreground command are its output, exactly, except
 *   that a background command's lines may come between them (a terminal
 *   mixes them); `...` stands for any lines. A command whose lines show
 *   `error: ...` must fail; any other must exit 0.
 * - What changes from run to run matches whatever it is in the docs: a
 *   `ctime` date, an ISO 8601 time, a port from 20000 up, a clock time
 *   with microseconds, the four bytes `od` prints of a time.
 * - A background command must not print an error the docs do not show.
 * - `npx -y deno@2.9.6` runs as `deno` (the same version: npx would need
 *   the npm registry, which a network namespace cannot reach; nothing
 *   else needs it, and the sessions' Deno cache holds nothing from npm).
 * - Where `JSR_URL` is a `file:` mirror, a `--workers` command gets the
 *   mirror added to its `--allow-read`, as the docs tell such a user to.
 *
 * @module
 */

import { assert, assertEquals, AssertionError, fail } from "@std/assert";
import { repoPath, runCommand, waitListening } from "./_helpers.ts";

const decoder = new TextDecoder();

/** One `$ command` of a session and the lines shown under it. */
export interface Step {
  /** The command as `sh -c` gets it (continuations joined, `&` dropped). */
  command: string;
  /** The lines under it. */
  expected: string[];
  /** Started with `&`. */
  background: boolean;
  /** Marked `# as root`. */
  root: boolean;
  /** The line of the document it starts on (1-based). */
  line: number;
}

/** One ```sh block. */
export interface Session {
  /** `README.md:42`, `servers/echo.ts:12`. */
  where: string;
  steps: Step[];
}

/** The ```sh blocks of `text` (Markdown) in `file`, as sessions. */
export function sessionsIn(file: string, text: string): Session[] {
  const lines = text.split("\n");
  const sessions: Session[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].trim() !== "```sh") continue;
    const start = i + 1;
    const block: string[] = [];
    for (i++; i < lines.length && lines[i].trim() !== "```"; i++) {
      block.push(lines[i]);
    }
    const steps: Step[] = [];
    for (let j = 0; j < block.length; j++) {
      const text = block[j];
      if (!text.startsWith("$ ")) {
        if (steps.length === 0) {
          throw new Error(
            `${file}:${start + j + 1}: a sh block starts with a $ command`,
          );
        }
        steps.at(-1)!.expected.push(text);
        continue;
      }
      const line = start + j + 1;
      let command = text.slice(2);
      while (command.endsWith("\\") && j + 1 < block.length) {
        command = `${command.slice(0, -1).trimEnd()} ${block[++j].trim()}`;
      }
      const root = /#\s*as root\b/.test(command);
      command = withoutComment(command);
      const background = command.endsWith(" &");
      if (background) command = command.slice(0, -2).trim();
      steps.push({ command, expected: [], background, root, line });
    }
    if (steps.length > 0) sessions.push({ where: `${file}:${start}`, steps });
  }
  return sessions;
}

/** `command` without a trailing `# comment` (a `#` in quotes stays). */
function withoutComment(command: string): string {
  let quote: string | undefined;
  for (let i = 0; i < command.length; i++) {
    const c = command[i];
    if (quote) {
      if (c === quote) quote = undefined;
    } else if (c === "'" || c === '"') {
      quote = c;
    } else if (c === "#" && /\s/.test(command[i - 1] ?? "")) {
      return command.slice(0, i).trim();
    }
  }
  return command.trim();
}

/** The module doc of a script (its first `/** ... *\/`), without the `*`s. */
export function moduleDoc(source: string): string {
  const header = /^\s*\/\*\*([\s\S]*?)\*\//.exec(source);
  if (!header) return "";
  return header[1].split("\n").map((line) => line.replace(/^\s*\* ?/, ""))
    .join("\n");
}

/** Lines of prose that look like a command outside a ```sh block. */
export function strayCommands(text: string): string[] {
  const stray: string[] = [];
  let fence: string | undefined;
  for (const line of text.split("\n")) {
    const trimmed = line.trim();
    if (trimmed.startsWith("```")) {
      fence = fence === undefined ? trimmed.slice(3) : undefined;
      continue;
    }
    if (fence === "sh" || fence === "ts") continue;
    if (
      /^(\$ |(npx -y )?deno (run|task|install|compile|test) |socat |nc |openssl |rdate |\.\/dist\/|sock-)/
        .test(trimmed)
    ) {
      stray.push(line);
    }
  }
  return stray;
}

/**
 * A `ctime` date (`Wed Nov 25 14:59:03 2026`), or `date`'s and rdate's,
 * which name the zone (`Wed Nov 25 14:59:03 UTC 2026`): the zone is kept
 * (`<date UTC>`), so a doc that shows one form matches only that form.
 */
const DATE =
  /\b(Mon|Tue|Wed|Thu|Fri|Sat|Sun) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ \d]\d \d\d:\d\d:\d\d( [A-Z]{3,5})? \d{4}\b/g;

/** A line with what changes between runs replaced by a name for it. */
export function normalize(line: string): string {
  return line
    // deno task's colours are off (NO_COLOR); any left go too.
    .replace(new RegExp(String.fromCharCode(27) + "\\[[0-9;]*m", "g"), "")
    .replace(/\r$/, "")
    .replace(DATE, (_, ...groups) => `<date${groups[2] ?? ""}>`)
    .replace(/\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z\b/g, "<iso time>")
    .replace(/\b\d\d:\d\d:\d\d\.\d{6}\b/g, "<clock>")
    .replace(
      /([:.])(\d{5})\b/g,
      (all, sep, port) =>
        Number(port) >= 20000 && Number(port) <= 65535 ? `${sep}<port>` : all,
    )
    .replace(/^( [0-9a-f]{2}){4}$/, "<4 bytes>")
    .trimEnd();
}

/** Output as lines: normalized, without deno task's `Task NAME ...` echo. */
function outputLines(text: string): string[] {
  const lines = text.split("\n");
  if (lines.at(-1) === "") lines.pop();
  return lines.map(normalize).filter((line) => !/^Task \S+ /.test(line));
}

/**
 * Matches a foreground command's output against the lines shown: returns
 * the shown lines it did not print (to be found in a background command's
 * output), or throws when it printed a line that is not shown.
 */
export function matchOutput(actual: string[], shown: string[]): string[] {
  const expected = shown.map(normalize);
  const fromBackground: string[] = [];
  let i = 0;
  let wildcard = false;
  for (const line of expected) {
    if (line === "...") {
      wildcard = true;
      continue;
    }
    if (i < actual.length && actual[i] === line) {
      i++;
      wildcard = false;
      continue;
    }
    if (wildcard) {
      const at = actual.indexOf(line, i);
      if (at >= 0) {
        i = at + 1;
        wildcard = false;
        continue;
      }
    }
    fromBackground.push(line);
  }
  if (wildcard) i = actual.length;
  if (i < actual.length) {
    throw new AssertionError(
      `printed a line the docs do not show: ${JSON.stringify(actual[i])}\n` +
        `printed:\n${actual.join("\n")}\nshown:\n${expected.join("\n")}`,
    );
  }
  return fromBackground;
}

/** A command the tests do not run, and why. */
const NOT_RUN: [RegExp, string][] = [
  [/\btask test\b/, "the test suite itself (CI runs it)"],
  [/\btask (bench|test:stress)\b/, "minutes long (CI runs it)"],
  [/\btask (check|fmt|lint)\b|\bdeno (fmt|lint|publish)\b/, "CI runs it"],
  [
    /\btask compile\b|\bdeno compile\b|(^|\s)\.?\/?dist\//,
    "needs deno compile's runtime download (tests/packaging_test.ts builds where it can)",
  ],
];

/** Why `session` cannot run here, or `undefined`. */
export function notRunReason(session: Session): string | undefined {
  for (const step of session.steps) {
    for (const [pattern, why] of NOT_RUN) {
      if (pattern.test(step.command)) return `${step.command}: ${why}`;
    }
  }
  return undefined;
}

/** Why no session can run here, or `""`. */
export function cannotRunHere(): string {
  if (Deno.build.os !== "linux") return "sessions run in Linux namespaces";
  if (Deno.uid() !== 0) return "sessions need root (netns, setpriv); CI is";
  for (const tool of ["ip", "setpriv", "socat"]) {
    const found = new Deno.Command("sh", {
      args: ["-c", `command -v ${tool}`],
      stdout: "null",
    }).outputSync().success;
    if (!found) return `${tool} is not installed (.ci/run installs it)`;
  }
  return "";
}

/** The uid and gid sessions run as: `nobody`. */
const USER = 65534;

/**
 * A copy of the repository owned by the user the sessions run as, with a
 * home and a Deno cache of its own; remove it with `await using`.
 */
export class Workspace implements AsyncDisposable {
  readonly root: string;
  readonly home: string;
  readonly work: string;
  #namespaces = 0;

  private constructor(root: string) {
    this.root = root;
    this.home = `${root}/home`;
    this.work = `${root}/home/sockets`;
  }

  /** Copies the repository's code and config; the npm cache comes along. */
  static async create(): Promise<Workspace> {
    const root = await Deno.makeTempDir({ prefix: "docs-" });
    await Deno.chmod(root, 0o755);
    const space = new Workspace(root);
    await Deno.mkdir(space.work, { recursive: true });
    for (const entry of ["servers", "clients", "lib", "tasks", "mod.ts"]) {
      const copied = await runCommand("cp", [
        "-r",
        repoPath(entry),
        `${space.work}/`,
      ]);
      assertEquals(copied.code, 0, copied.stderr);
    }
    // Of bench/, the one script the README runs.
    await Deno.mkdir(`${space.work}/bench`);
    await Deno.copyFile(
      repoPath("bench/listentls_repro.ts"),
      `${space.work}/bench/listentls_repro.ts`,
    );
    // Without the workspace's other members: the copy is the package.
    const config = JSON.parse(await Deno.readTextFile(repoPath("deno.json")));
    await Deno.writeTextFile(
      `${space.work}/deno.json`,
      JSON.stringify(config, null, 2) + "\n",
    );
    // A Deno cache of its own, with nothing from npm (no session needs
    // it); a namespace reaches no registry, so the JSR modules come from
    // a file: JSR_URL mirror, or else from this Deno's cache.
    await Deno.mkdir(`${space.home}/.cache/deno`, { recursive: true });
    if (!Deno.env.get("JSR_URL")?.startsWith("file:")) {
      const info = await runCommand(Deno.execPath(), ["info", "--json"]);
      const denoDir = JSON.parse(decoder.decode(info.stdout)).denoDir;
      await runCommand("cp", [
        "-r",
        `${denoDir}/remote`,
        `${space.home}/.cache/deno/`,
      ]);
    }
    const owned = await runCommand("chown", [
      "-R",
      `${USER}:${USER}`,
      space.home,
    ]);
    assertEquals(owned.code, 0, owned.stderr);
    return space;
  }

  /** The environment of every command: a plain login, this Deno first. */
  env(): Record<string, string> {
    const denoBin = Deno.execPath().replace(/\/[^/]*$/, "");
    return {
      HOME: this.home,
      USER: "nobody",
      DENO_DIR: `${this.home}/.cache/deno`,
      PATH:
        `${this.home}/.deno/bin:${denoBin}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin`,
      NO_COLOR: "1",
      LANG: "C.UTF-8",
      ...(Deno.env.get("JSR_URL") ? { JSR_URL: Deno.env.get("JSR_URL")! } : {}),
    };
  }

  /** Runs every step of `session` in a fresh network namespace. */
  async run(session: Session): Promise<void> {
    const ns = `docs-${Deno.pid}-${this.#namespaces++}`;
    const add = await runCommand("ip", ["netns", "add", ns]);
    assertEquals(add.code, 0, add.stderr);
    const background: Background[] = [];
    try {
      await runCommand("ip", ["-n", ns, "link", "set", "lo", "up"]);
      for (const step of session.steps) {
        const where = `${session.where.replace(/:\d+$/, "")}:${step.line}`;
        try {
          await this.#step(ns, step, background);
        } catch (error) {
          if (!(error instanceof AssertionError)) throw error;
          throw new AssertionError(
            `${where}: $ ${step.command}\n${error.message}`,
          );
        }
      }
      const shown = new Set(
        session.steps.flatMap((step) => step.expected.map(normalize)),
      );
      for (const job of background) {
        const status = await job.stop();
        const hidden = job.lines().filter((line) =>
          /^error|\bfailed\b|Uncaught/.test(line) && !shown.has(line)
        );
        assertEquals(
          hidden,
          [],
          `$ ${job.step.command} (started at line ${job.step.line}) printed errors the docs do not show`,
        );
        const ours = /^(deno|sock-)/.test(job.step.command);
        assert(
          status.code === 0 ||
            (!ours && (status.signal === "SIGTERM" || status.code === 143)),
          `$ ${job.step.command} (started at line ${job.step.line}) ended with ${status.code} ${
            status.signal ?? ""
          } on SIGTERM:\n${job.output}`,
        );
      }
    } finally {
      await killNamespace(ns);
      for (const job of background) await job.kill();
      await runCommand("ip", ["netns", "del", ns]);
    }
  }

  #spawn(ns: string, step: Step): Deno.ChildProcess {
    let command = step.command.replace(/^npx -y deno@2\.9\.6 /, "deno ");
    const mirror = Deno.env.get("JSR_URL");
    if (command.includes("--workers") && mirror?.startsWith("file:")) {
      // As the docs say: a worker reads @std from a file: mirror too.
      const path = new URL(mirror).pathname.replace(/\/$/, "");
      command = command.replace(
        /--allow-read=(\S+)/,
        `--allow-read=$1,${path}`,
      );
    }
    const env = Object.entries(this.env()).map(([k, v]) => `${k}=${v}`);
    const user = step.root ? [] : [
      "setpriv",
      `--reuid=${USER}`,
      `--regid=${USER}`,
      "--clear-groups",
      "--",
    ];
    const script = `cd ${this.work} && exec 2>&1 && ${
      step.background ? "exec " : ""
    }${command}`;
    // `ip netns exec`, setpriv, env and `exec` replace themselves: the
    // child's pid is the command's (a background one gets the SIGTERM).
    return new Deno.Command("ip", {
      args: [
        "netns",
        "exec",
        ns,
        ...user,
        "env",
        "-i",
        ...env,
        "sh",
        "-c",
        script,
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
  }

  async #step(ns: string, step: Step, background: Background[]) {
    if (step.background) {
      const job = new Background(step, this.#spawn(ns, step), ns);
      background.push(job);
      await job.waitFor(step.expected.map(normalize), 15_000);
      // A peer that prints nothing (socat) is ready once it listens.
      if (step.expected.length === 0) {
        await waitListening(job.child.pid, { netns: ns, transport: "any" });
      }
      return;
    }
    const child = this.#spawn(ns, step);
    const timer = setTimeout(() => killNamespace(ns), 20_000);
    const output = await child.output();
    clearTimeout(timer);
    const text = decoder.decode(output.stdout);
    const fromBackground = matchOutput(outputLines(text), step.expected);
    const failing = step.expected.some((line) => line.startsWith("error:"));
    if (output.signal === "SIGKILL") fail(`still running after 20 s:\n${text}`);
    if (failing) {
      assert(
        output.code !== 0,
        `exits 0 though the docs show an error:\n${text}`,
      );
    } else {
      assertEquals(output.code, 0, `exits ${output.code}:\n${text}`);
    }
    if (fromBackground.length === 0) return;
    if (background.length === 0) {
      fail(
        `the docs show lines it did not print: ${
          fromBackground.join(" | ")
        }\nprinted:\n${text}`,
      );
    }
    const deadline = Date.now() + 10_000;
    for (const line of fromBackground) {
      while (!background.some((job) => job.lines().includes(line))) {
        if (Date.now() > deadline) {
          fail(
            `the docs show a line nobody printed: ${JSON.stringify(line)}\n` +
              `it printed:\n${text}\nin the background:\n${
                background.map((job) => job.output).join("\n")
              }`,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await Deno.remove(this.root, { recursive: true });
  }
}

/** A command started with `&`: its output so far, and a way to stop it. */
class Background {
  output = "";
  readonly status: Promise<Deno.CommandStatus>;
  readonly #done: Promise<void>;

  constructor(
    readonly step: Step,
    readonly child: Deno.ChildProcess,
    readonly ns: string,
  ) {
    this.#done = (async () => {
      for await (const chunk of child.stdout) {
        this.output += decoder.decode(chunk, { stream: true });
      }
    })();
    this.status = child.status;
  }

  lines(): string[] {
    return outputLines(this.output);
  }

  /**
   * Waits until every line of `expected` has been printed (in any order:
   * stdout and stderr reach the pipe in an order no one controls).
   */
  async waitFor(expected: string[], timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let exited = false;
    this.status.then(() => exited = true);
    while (true) {
      const missing = [...expected];
      for (const line of this.lines()) {
        const at = missing.indexOf(line);
        if (at >= 0) missing.splice(at, 1);
      }
      if (missing.length === 0) return;
      if (exited || Date.now() > deadline) {
        if (exited) await this.#done;
        fail(
          `${exited ? "exited" : "waited 15 s"}; the docs show ${
            JSON.stringify(missing[0])
          }, it printed:\n${this.output}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  async stop(): Promise<Deno.CommandStatus> {
    try {
      this.child.kill("SIGTERM");
    } catch {
      // Already gone.
    }
    const timer = setTimeout(() => this.kill(), 15_000);
    const status = await this.status;
    clearTimeout(timer);
    await this.#done;
    return status;
  }

  async kill(): Promise<void> {
    await killNamespace(this.ns);
    await this.status;
    await this.#done;
  }
}

/**
 * Kills every process in the network namespace `ns`: all a session
 * started (a pipeline's last process may hold the output open).
 */
async function killNamespace(ns: string): Promise<void> {
  const { stdout } = await runCommand("ip", ["netns", "pids", ns]);
  for (const pid of decoder.decode(stdout).split(/\s+/).filter(Boolean)) {
    try {
      Deno.kill(Number(pid), "SIGKILL");
    } catch {
      // Already gone.
    }
  }
}
