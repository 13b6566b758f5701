/**
 * Packaging: every script's header command, its deno.json task, its export,
 * its install line (in its module doc and in the README) and its row in the
 * README agree; `deno publish --dry-run` is clean; every script installs
 * with `deno install -g` and the installed commands work, UDP included;
 * `deno task compile` builds binaries that pass the same smoke test, or,
 * where Deno's runtime cannot be had, says so in one line; a `DENORT_BIN`
 * that is not a runtime is refused, and a failed build leaves nothing.
 */

import {
  assert,
  assertEquals,
  assertGreater,
  assertLess,
  assertMatch,
  assertNotMatch,
  assertRejects,
} from "@std/assert";
import {
  COMMAND_PREFIX,
  commandName,
  installLine,
  listScripts,
} from "../tasks/scripts.ts";
import { compileArgs } from "../tasks/compile.ts";
import {
  hasCommand,
  missing,
  repoPath,
  runCommand,
  ScriptProcess,
} from "./_helpers.ts";
import { moduleDoc } from "./_docs.ts";

const decoder = new TextDecoder();
const SCRIPTS = await listScripts(repoPath(""));
const CONFIG = JSON.parse(await Deno.readTextFile(repoPath("deno.json")));
const README = (await Deno.readTextFile(repoPath("README.md")))
  .replace(/\\\n\s*/g, " ")
  .replace(/[ \t]+/g, " ");
const DENO = Deno.execPath();

/** Runs `deno ARGS` in the repository; returns exit code and output. */
async function deno(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command(DENO, {
    args,
    cwd: repoPath(""),
    stdin: "null",
    env: { NO_COLOR: "1", ...env },
  }).output();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

Deno.test("every script in servers/ and clients/ has a header command for itself", () => {
  const names = SCRIPTS.map((s) => s.name);
  assert(SCRIPTS.some((s) => s.path === "servers/echo.ts"));
  assert(SCRIPTS.some((s) => s.path === "clients/connect.ts"));
  assertEquals(new Set(names).size, names.length, `names collide: ${names}`);
  for (const script of SCRIPTS) {
    assert(
      script.permissions.some((p) => p.startsWith("--allow-")),
      `${script.path}: its header command grants nothing: ${script.command}`,
    );
  }
});

for (const script of SCRIPTS) {
  Deno.test(`${script.path}: deno.json task '${script.name}', export, install line and README row agree with its header`, async () => {
    const task: string | undefined = CONFIG.tasks[script.name];
    assert(
      task,
      `deno.json has no task '${script.name}'; add "${script.name}": "${script.task}"`,
    );
    assertEquals(
      task.trim().split(/\s+/),
      script.task.split(" "),
      `task ${script.name} (${task}) is not the header command of ${script.path} (${script.task})`,
    );
    assertEquals(
      CONFIG.exports[`./${script.path.slice(0, -3)}`],
      `./${script.path}`,
      `deno.json exports lacks "./${script.path.slice(0, -3)}"`,
    );
    const doc = moduleDoc(await Deno.readTextFile(repoPath(script.path)))
      .replace(/\\\n\s*/g, " ").replace(/[ \t]+/g, " ");
    assert(
      doc.includes(`$ ${installLine(script)}`),
      `${script.path}'s module doc has no session with its install line: $ ${
        installLine(script)
      }`,
    );
    const row = README.split("\n").find((line) =>
      line.startsWith(`| [\`${script.path}\`](${script.path})`)
    );
    assert(
      row,
      `README.md's table has no row "| [\`${script.path}\`](${script.path}) | ... |"`,
    );
    assertMatch(
      row,
      new RegExp(`\\| \`deno task ${script.name}( [^\`]*)?\` +\\|$`),
      `README.md's row for ${script.path} does not end with its task`,
    );
  });
}

Deno.test("deno.json's import map holds nothing from npm: a task needs no npm registry", () => {
  const npm = Object.entries(CONFIG.imports as Record<string, string>)
    .filter(([, target]) => target.startsWith("npm:"));
  assertEquals(npm, [], "deno task resolves the whole import map first");
});

Deno.test("every script's task prints its --help with the npm registry unreachable and a fresh Deno cache", async () => {
  // A cache with nothing from npm: a copy of the JSR modules at most (with
  // a file: JSR_URL mirror, not even that), and npm pointed at a port
  // nothing listens on, as behind a firewall that lets only JSR through.
  const denoDir = await Deno.makeTempDir({ prefix: "pkg-no-npm-" });
  try {
    const info = await deno(["info", "--json"]);
    const cached = `${JSON.parse(info.stdout).denoDir}/remote`;
    if (!Deno.env.get("JSR_URL")?.startsWith("file:")) {
      const copied = await runCommand("cp", ["-r", cached, `${denoDir}/`]);
      assertEquals(copied.code, 0, copied.stderr);
    }
    const env = {
      DENO_DIR: denoDir,
      NPM_CONFIG_REGISTRY: "http://127.0.0.1:9/",
    };
    for (const script of SCRIPTS) {
      const run = await deno(["task", script.name, "--help"], env);
      assertEquals(
        run.code,
        0,
        `deno task ${script.name} --help, without npm:\n${run.stderr}`,
      );
      assertMatch(run.stdout, /^usage: /m);
      assertNotMatch(run.stderr, /npm|fast-check/);
    }
  } finally {
    await Deno.remove(denoDir, { recursive: true });
  }
});

Deno.test("the README installs every script through tasks/scripts.ts --install (whose lines the module docs show)", () => {
  assert(
    README.includes(
      "$ deno run --allow-read=. tasks/scripts.ts --install | sh 2>&1 | grep -c Successfully",
    ),
    "README.md lacks the session that installs every script",
  );
  assert(README.includes(`\n${SCRIPTS.length}\n`));
});

/** The files a `deno doc --lint` argument list names (`dir/*.ts` globs). */
async function expand(patterns: string[]): Promise<Set<string>> {
  const files = new Set<string>();
  for (const pattern of patterns) {
    const glob = /^([\w./-]+)\/\*\.ts$/.exec(pattern);
    if (!glob) {
      files.add(pattern.replace(/^\.\//, ""));
      continue;
    }
    for await (const entry of Deno.readDir(repoPath(glob[1]))) {
      if (entry.name.endsWith(".ts")) files.add(`${glob[1]}/${entry.name}`);
    }
  }
  return files;
}

Deno.test("deno.json exports mod.ts and every script, and `deno task check` doc-lints them all", async () => {
  assertEquals(CONFIG.exports["."], "./mod.ts");
  assertMatch(CONFIG.name, /^@[a-z0-9-]+\/[a-z0-9-]+$/);
  assertMatch(CONFIG.version, /^\d+\.\d+\.\d+/);
  const targets = Object.values(CONFIG.exports as Record<string, string>)
    .map((t) => t.replace(/^\.\//, ""));
  for (const target of targets) {
    await Deno.stat(repoPath(target)); // Throws for an export to nothing.
  }
  for (const script of SCRIPTS) assert(targets.includes(script.path));
  const lint = /deno doc --lint ([^&|;]+)/.exec(CONFIG.tasks.check);
  assert(
    lint,
    `the check task runs no deno doc --lint: ${CONFIG.tasks.check}`,
  );
  const linted = await expand(lint[1].trim().split(/\s+/));
  for (const target of targets) {
    assert(
      linted.has(target),
      `deno task check does not doc-lint ${target}`,
    );
  }
});

/** Runs `git ARGS` in the repository; `undefined` when git cannot (no git, not a checkout). */
async function git(args: string[]): Promise<string | undefined> {
  if (!hasCommand("git")) return undefined;
  const { code, stdout } = await runCommand("git", [
    "-C",
    repoPath(""),
    ...args,
  ]);
  return code === 0 ? decoder.decode(stdout) : undefined;
}

const IN_GIT = (await git(["rev-parse", "--is-inside-work-tree"]))?.trim() ===
  "true";
if (!IN_GIT) console.error("SKIP: git checks: not a git checkout, or no git");

/** Each lock file git tracks (any directory), as committed to the index. */
async function trackedLocks(): Promise<{ path: string; lock: unknown }[]> {
  const listed = await git([
    "ls-files",
    "-z",
    "--",
    "deno.lock",
    "**/deno.lock",
  ]);
  const paths = (listed ?? "").split("\0").filter((p) => p !== "");
  return await Promise.all(paths.map(async (path) => ({
    path,
    lock: JSON.parse((await git(["show", `:${path}`])) ?? "{}"),
  })));
}

/** Whether a parsed deno.lock pins JSR packages (v4+ `jsr`, v3 `packages.jsr`). */
function hasJsrSection(lock: unknown): boolean {
  const l = lock as { jsr?: unknown; packages?: { jsr?: unknown } };
  return l?.jsr !== undefined || l?.packages?.jsr !== undefined;
}

Deno.test({
  name:
    "no deno.lock tracked by git pins jsr packages, and deno.json keeps the lock off",
  ignore: !IN_GIT,
  async fn() {
    // JSR is reached through an offline mirror here (JSR_URL): hashes it
    // writes into a lock need not match jsr.io's, so none may be committed.
    const locks = await trackedLocks();
    for (const { path, lock } of locks) {
      assert(!hasJsrSection(lock), `${path} is tracked and has a jsr section`);
    }
    // And none gets written: with the lock on, any run would make one.
    assertEquals(CONFIG.lock, false, 'deno.json must keep "lock": false');
  },
});

Deno.test({
  name: "the code uses @std, not the node: util and assert modules",
  ignore: missing("grep"),
  async fn() {
    const SCOPE = "";
    const { code, stdout, stderr } = await runCommand("grep", [
      "-rn",
      "--include=*.ts",
      "node:\\(util\\|assert\\)",
      repoPath(SCOPE),
    ]);
    assert(code === 0 || code === 1, `grep failed: ${stderr}`);
    const offending = decoder.decode(stdout).split("\n").filter((hit) => {
      const text = hit.replace(/^[^:]*:\d+:/, "").trim();
      return hit !== "" && !/^(\/\/|\/\*|\*)/.test(text);
    });
    assertEquals(
      offending,
      [],
      "non-comment lines name the node: util or assert module",
    );
  },
});

Deno.test("deno publish --dry-run is clean and publishes no tests, tasks or bench", async () => {
  const { code, stdout, stderr } = await deno([
    "publish",
    "--dry-run",
    "--allow-dirty",
  ]);
  const output = stdout + stderr;
  assertEquals(code, 0, `deno publish --dry-run failed:\n${output}`);
  assertMatch(output, /Dry run complete/);
  assertMatch(output, /mod\.ts/);
  assertNotMatch(
    output,
    /tests\/|tasks\/|bench\//,
    "excluded files published",
  );
});

/** Runs `fn` with a fresh network namespace (only loopback, up). */
async function inNamespace(fn: (ns: string) => Promise<void>): Promise<void> {
  const ns = `pkg7-${Deno.pid}-${namespaces++}`;
  const add = await runCommand("ip", ["netns", "add", ns]);
  assertEquals(add.code, 0, add.stderr);
  try {
    const up = await runCommand("ip", ["-n", ns, "link", "set", "lo", "up"]);
    assertEquals(up.code, 0, up.stderr);
    await fn(ns);
  } finally {
    await runCommand("ip", ["netns", "del", ns]);
  }
}
let namespaces = 0;

function noNamespaces(): boolean {
  const why = Deno.build.os !== "linux"
    ? "network namespaces are Linux only"
    : Deno.uid() !== 0
    ? "network namespaces need root (CI runs as root)"
    : new Deno.Command("sh", { args: ["-c", "command -v ip"], stdout: "null" })
        .outputSync().success
    ? ""
    : "ip (iproute2) not installed (.ci/run installs it)";
  if (why) console.error(`SKIP: ${why}`);
  return why !== "";
}

/** The PATH under which an installed command finds this `deno`. */
const PATH = `${DENO.replace(/\/[^/]*$/, "")}:${Deno.env.get("PATH") ?? ""}`;

/**
 * The smoke test a script, its installed command and its compiled binary
 * all pass: `--help` of each exits 0 with its usage; then, in a network
 * namespace of its own (the commands hold only their header's permissions,
 * so they use the scripts' own fixed ports, which nothing else there can
 * hold): an echo round trip through `connect`, the hello pair (TCP and
 * UDP), UDP echo through inetd, both families at the accept server (with
 * socat), a daytime line and a time reading (on 10013 and 10037, as their
 * commands say), each server stopped by SIGTERM with exit 0.
 * `command(name)` is the argv that starts the script called `name`.
 */
async function smokeTest(
  command: (name: string) => string[],
  network: boolean,
): Promise<void> {
  const env = { PATH, NO_COLOR: "1" };
  for (const script of SCRIPTS) {
    const [cmd, ...args] = command(script.name);
    const help = await new Deno.Command(cmd, {
      args: [...args, "--help"],
      stdin: "null",
      env,
    }).output();
    assertEquals(
      help.code,
      0,
      `${script.name} --help: ${decoder.decode(help.stderr)}`,
    );
    assertMatch(
      decoder.decode(help.stdout),
      /^usage: /,
      `${script.name} --help`,
    );
  }
  if (!network) return;

  await inNamespace(async (ns) => {
    const start = (name: string, args: string[] = []): ScriptProcess =>
      new ScriptProcess(
        new Deno.Command("ip", {
          args: ["netns", "exec", ns, ...command(name), ...args],
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
          env,
        }).spawn(),
      );
    const client = async (name: string, args: string[], input = "") => {
      const child = new Deno.Command("ip", {
        args: ["netns", "exec", ns, ...command(name), ...args],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
        env,
      }).spawn();
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode(input));
      await writer.close();
      const output = await child.output();
      return {
        code: output.code,
        stdout: decoder.decode(output.stdout),
        stderr: decoder.decode(output.stderr),
      };
    };
    const stop = async (server: ScriptProcess, what: string) => {
      server.kill("SIGTERM");
      const { code, stderr } = await server.finished();
      assertEquals(code, 0, `${what} on SIGTERM: ${stderr}`);
    };

    {
      await using echo = start("echo");
      await echo.waitForStderr(/^listening on 0\.0\.0\.0:15000$/);
      const reply = await client("connect", ["127.0.0.1", "15000"], "ping\n");
      assertEquals(reply.code, 0, reply.stderr);
      assertEquals(reply.stdout, "ping\n");
      assertMatch(reply.stderr, /connected to 127\.0\.0\.1:15000/);
      await stop(echo, "echo");
    }
    {
      await using hello = start("hello", ["--once"]);
      await hello.waitForStderr(/^listening on 127\.0\.0\.1:3500$/);
      const reply = await client("hello-client", ["hi"]);
      assertEquals(reply.code, 0, reply.stderr);
      assertEquals(reply.stdout, "hello\n");
      const served = await hello.finished();
      assertEquals(served.code, 0, served.stderr);
      assertEquals(served.stdout, "Client with IP 127.0.0.1 connected\nhi");
    }
    if (SCRIPTS.some((s) => s.name === "udp")) {
      await using udp = start("udp", ["--once"]);
      await udp.waitForStderr(/^listening on 127\.0\.0\.1:3500$/);
      const reply = await client("udp-client", ["hi"]);
      assertEquals(reply.code, 0, reply.stderr);
      assertEquals(reply.stdout, "hello\n");
      const served = await udp.finished();
      assertEquals(served.code, 0, served.stderr);
      assertEquals(served.stdout, "Client with IP 127.0.0.1 sent datagram\nhi");
    }
    if (SCRIPTS.some((s) => s.name === "inetd") && hasCommand("socat")) {
      // UDP through a command that has no --unstable-net of its own: the
      // unstable API comes from deno.json (install and compile name it).
      await using inetd = start("inetd", ["--only", "echo", "--udp-only"]);
      await inetd.waitForStderr(/^listening on 0\.0\.0\.0:10007/);
      const reply = await runCommand("ip", [
        "netns",
        "exec",
        ns,
        "socat",
        "-",
        "UDP:127.0.0.1:10007,sourceport=40000",
      ], "over udp\n");
      assertEquals(decoder.decode(reply.stdout), "over udp\n", reply.stderr);
      await stop(inetd, "inetd");
    }
    {
      await using daytime = start("daytime");
      await daytime.waitForStderr(/^listening on 0\.0\.0\.0:10013$/);
      const reply = await client("daytime-client", ["127.0.0.1"]);
      assertEquals(reply.code, 0, reply.stderr);
      assertMatch(
        reply.stdout,
        /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun) [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}\r\n$/,
      );
      await stop(daytime, "daytime");
    }
    if (SCRIPTS.some((s) => s.name === "accept") && hasCommand("socat")) {
      await using accept = start("accept");
      await accept.waitForStderr(/^listening on /);
      for (
        const [target, line] of [
          ["127.0.0.1", "IPv4 client 127.0.0.1\n"],
          ["[::1]", "IPv6 client ::1\n"],
        ]
      ) {
        const reply = await runCommand("ip", [
          "netns",
          "exec",
          ns,
          "socat",
          "-",
          `TCP:${target}:12345`,
        ], "");
        assertEquals(reply.code, 0, reply.stderr);
        assertEquals(decoder.decode(reply.stdout), line);
      }
      await stop(accept, "accept");
    }
    {
      await using time = start("time");
      await time.waitForStderr(/^listening on 0\.0\.0\.0:10037$/);
      const reply = await client("time-client", ["127.0.0.1"]);
      assertEquals(reply.code, 0, reply.stderr);
      assertMatch(reply.stdout, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\n$/);
      const skew = Math.abs(Date.parse(reply.stdout.trim()) - Date.now());
      assertLess(skew, 60_000, `time-client is ${skew} ms off`);
      await stop(time, "time");
    }
  });
}

Deno.test({
  name:
    "the README's deno install -g lines install every script as a working command",
  sanitizeResources: false,
  async fn() {
    const root = await Deno.makeTempDir({ prefix: "pkg7-install-" });
    try {
      for (const script of SCRIPTS) {
        const { code, stderr } = await deno(
          installLine(script).split(" ").slice(1),
          { DENO_INSTALL_ROOT: root },
        );
        assertEquals(code, 0, `${installLine(script)}: ${stderr}`);
        const shim = await Deno.readTextFile(
          `${root}/bin/${commandName(script)}`,
        );
        for (const permission of script.permissions) {
          assert(
            shim.includes(`${permission}`),
            `${commandName(script)} lacks ${permission}:\n${shim}`,
          );
        }
        assertNotMatch(shim, /--allow-all|\s-A\s/);
      }
      const network = !noNamespaces();
      if (!network) console.error("SKIP: only --help of each command was run");
      await smokeTest(
        (name) => [`${root}/bin/${COMMAND_PREFIX}${name}`],
        network,
      );
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test(
  "the smoke test passes for the scripts run with their header commands",
  {
    ignore: noNamespaces(),
  },
  async () => {
    await smokeTest((name) => {
      const script = SCRIPTS.find((s) => s.name === name)!;
      return [
        DENO,
        "run",
        "--quiet",
        ...script.permissions,
        repoPath(script.path),
        ...script.args,
      ];
    }, true);
  },
);

/** `deno task compile ARGS` in the repository, as a user runs it. */
function compileTask(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return deno(["task", "--quiet", "compile", ...args], env);
}

const DIST = await Deno.makeTempDir({ prefix: "pkg7-dist-" });
addEventListener("unload", () => Deno.removeSync(DIST, { recursive: true }));
/**
 * Whether `deno compile` can get its runtime here (DENORT_BIN set, or the
 * download works): the first compile is the probe.
 */
const PROBE = await compileTask(["--out", DIST, "echo"]);
const RUNTIME = PROBE.code === 0;

Deno.test("deno task compile builds, or says in one error line that it cannot get the runtime", async () => {
  if (RUNTIME) {
    assertEquals(
      PROBE.stdout,
      `${DIST}/echo  --allow-net=0.0.0.0:15000  servers/echo.ts\n`,
    );
    assert((await Deno.stat(`${DIST}/echo`)).isFile);
    return;
  }
  console.error(`compile: ${PROBE.stderr.trim()}`);
  assertEquals(PROBE.code, 1, PROBE.stderr);
  assertMatch(
    PROBE.stderr,
    /^error: deno compile could not download its runtime \(denort \d+\.\d+\.\d+[^\n]*\); nothing built\. Set DENORT_BIN=\/path\/to\/denort [^\n]*\n$/,
  );
  await assertRejects(() => Deno.stat(`${DIST}/echo`), Deno.errors.NotFound);
});

/** A fresh output directory inside the repository (the task may write there). */
function freshOut(): string {
  return `.pkg-dist-${Deno.pid}-${outs++}`;
}
let outs = 0;

/** Asserts that `out` (relative to the repository) does not exist. */
async function assertNothingLeft(out: string): Promise<void> {
  const left = await Deno.stat(repoPath(out)).then(() => true, () => false);
  if (left) await Deno.remove(repoPath(out), { recursive: true });
  assert(!left, `a failed compile left ${out}/ behind`);
}

Deno.test(
  "deno task compile: a failed build leaves no output directory behind",
  {
    ignore: RUNTIME,
  },
  async () => {
    const out = freshOut();
    const failed = await compileTask(["--out", out, "echo"]);
    assertEquals(failed.code, 1, failed.stderr);
    await assertNothingLeft(out);
  },
);

Deno.test("deno task compile: a DENORT_BIN that is not a Deno runtime of this version is one error line, and nothing is built", async () => {
  const fakes = await Deno.makeTempDir({ prefix: "pkg7-denort-" });
  try {
    // Runs like a denort and holds its message, but is a shell script:
    // it passes the check, and deno compile then fails on it.
    const fake = (version: string) =>
      `#!/bin/sh\n# ${version}\necho 'error: Could not find standalone binary section.' >&2\nexit 1\n`;
    await Deno.writeTextFile(`${fakes}/denort`, fake(Deno.version.deno), {
      mode: 0o755,
    });
    await Deno.writeTextFile(`${fakes}/old-denort`, fake("1.0.0"), {
      mode: 0o755,
    });
    const cases: [string, RegExp][] = [
      [
        "/nonexistent/denort",
        /^error: DENORT_BIN=\/nonexistent\/denort does not exist\n$/,
      ],
      [
        "/bin/true",
        /^error: DENORT_BIN=\/bin\/true is not a Deno runtime \(denort\): run alone, it exits 0 and prints nothing\n$/,
      ],
      [
        DENO,
        /^error: DENORT_BIN=\S+ is not a Deno runtime \(denort\): run alone, it exits 0 and prints 'Deno \d/,
      ],
      [
        `${fakes}/old-denort`,
        /^error: DENORT_BIN=\S+ is a denort, but not of Deno \d+\.\d+\.\d+ /,
      ],
      [
        `${fakes}/denort`,
        /^error: deno compile servers\/echo\.ts \(DENORT_BIN=\S+\): [^\n]+\n$/,
      ],
    ];
    for (const [denort, expected] of cases) {
      const out = freshOut();
      const result = await compileTask(["--out", out, "echo"], {
        DENORT_BIN: denort,
      });
      assertEquals(result.code, 1, `DENORT_BIN=${denort}: ${result.stderr}`);
      assertMatch(result.stderr, expected);
      assertEquals(result.stderr.trim().split("\n").length, 1, result.stderr);
      assertEquals(result.stdout, "");
      await assertNothingLeft(out);
    }
  } finally {
    await Deno.remove(fakes, { recursive: true });
  }
});

Deno.test("compiled binaries carry the unstable net API, their permissions and their flags (read from the binary)", async () => {
  // /bin/true as the runtime: deno compile appends the program's metadata
  // to it all the same, and needs no download (the task refuses it).
  for (const name of ["udp-client", "inetd", "daytime"]) {
    const script = SCRIPTS.find((s) => s.name === name);
    if (!script) continue;
    const output = `${DIST}/meta-${name}`;
    const [, ...rest] = compileArgs(script, output);
    const built = await deno(["compile", "--no-check", ...rest], {
      DENORT_BIN: "/bin/true",
    });
    assertEquals(built.code, 0, built.stderr);
    const binary = new TextDecoder("latin1").decode(
      await Deno.readFile(output),
    );
    await Deno.remove(output);
    assertMatch(binary, /"features":\[[^\]]*"net"/, `${name}: no unstable net`);
    const argv = /"argv":(\[[^\]]*\])/.exec(binary)?.[1];
    assertEquals(JSON.parse(argv ?? "null"), script.args, `${name}: argv`);
    const net = /"allow_net":(\[[^\]]*\]|null)/.exec(binary)?.[1];
    const granted = script.permissions.find((p) => p.startsWith("--allow-net"));
    assertEquals(
      JSON.parse(net ?? "null"),
      granted === "--allow-net" ? [] : granted?.split("=")[1].split(","),
      `${name}: allow_net`,
    );
  }
});

Deno.test("without the unstable net API, UDP fails with one line saying to add --unstable-net", async () => {
  // No deno.json (so no "unstable": ["net"]), its imports as an import map.
  const dir = await Deno.makeTempDir({ prefix: "pkg7-nounstable-" });
  try {
    const imports: Record<string, string> = {};
    for (
      const [name, target] of Object.entries(
        CONFIG.imports as Record<string, string>,
      )
    ) {
      imports[name] = target;
      if (target.startsWith("jsr:")) {
        imports[`${name}/`] = target.replace(/^jsr:/, "jsr:/") + "/";
      }
    }
    await Deno.writeTextFile(`${dir}/map.json`, JSON.stringify({ imports }));
    for (
      const args of [
        ["servers/echo.ts", "--udp", "--hostname", "127.0.0.1", "--port", "0"],
        ["clients/udp.ts", "--timeout", "0.1"],
      ]
    ) {
      const result = await deno([
        "run",
        "--no-config",
        `--import-map=${dir}/map.json`,
        "--allow-net",
        ...args,
      ]);
      assertEquals(result.code, 1, result.stderr);
      assertMatch(
        result.stderr,
        /^error: [^\n]*UDP and Unix datagram sockets need Deno's unstable net API: run with --unstable-net\n$/,
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deno task compile: an unknown name is a usage error; --help prints the usage", async () => {
  const unknown = await compileTask(["--out", DIST, "nope"]);
  assertEquals(unknown.code, 2);
  assertMatch(
    unknown.stderr,
    /^error: no script named 'nope' \(names: [^\n]*echo[^\n]*\)\n$/,
  );
  const help = await compileTask(["--help"]);
  assertEquals(help.code, 0);
  assertMatch(help.stdout, /^usage: deno task compile/);
});

Deno.test({
  name:
    "compiled binaries hold only their header's permissions and pass the smoke test",
  ignore: !RUNTIME && (console.error(
    "SKIP: deno compile cannot get its runtime here (set DENORT_BIN=/path/to/denort to run this)",
  ),
    true),
  async fn() {
    const built = await compileTask(["--out", DIST]);
    assertEquals(built.code, 0, built.stderr);
    for (const script of SCRIPTS) {
      assert((await Deno.stat(`${DIST}/${script.name}`)).isFile);
    }
    // Baked in: another port is not granted, and no prompt is possible.
    const other = await runCommand(`${DIST}/echo`, ["--port", "15001"]);
    assertEquals(other.code, 1);
    assertMatch(
      other.stderr,
      /^error: [^\n]*(--allow-net|permission|NotCapable)/i,
    );
    const network = !noNamespaces();
    await smokeTest((name) => [`${DIST}/${name}`], network);
  },
});

Deno.test("every exported function and class has a JSDoc @example (deno test --doc runs them)", async () => {
  const targets = Object.values(CONFIG.exports as Record<string, string>);
  const { code, stdout, stderr } = await deno(["doc", "--json", ...targets]);
  assertEquals(code, 0, stderr);
  const doc = JSON.parse(stdout) as {
    nodes: Record<string, {
      symbols: {
        name: string;
        declarations: {
          kind: string;
          jsDoc?: { tags?: { kind: string }[] };
        }[];
      }[];
    }>;
  };
  const lacking: string[] = [];
  let checked = 0;
  for (const [module, { symbols }] of Object.entries(doc.nodes)) {
    for (const symbol of symbols) {
      for (const declaration of symbol.declarations) {
        // Constants, interfaces and types are documented, not run.
        if (!["function", "class"].includes(declaration.kind)) continue;
        checked++;
        if (!declaration.jsDoc?.tags?.some((t) => t.kind === "example")) {
          lacking.push(
            `${
              module.replace(/^.*?\/(?=[^/]+\/[^/]+$|mod\.ts$)/, "")
            }: ${symbol.name}`,
          );
        }
      }
    }
  }
  assertGreater(checked, 50, `only ${checked} functions and classes found`);
  assertEquals(lacking, [], `no @example: ${lacking.join(", ")}`);
});
