/**
 * Every shell session in the README and in the scripts' module docs runs
 * as written (see `tests/_docs.ts` for how), and no command is shown
 * outside one: the docs cannot drift from what the commands do.
 */

import {
  assert,
  assertEquals,
  assertGreater,
  AssertionError,
  assertLess,
  assertThrows,
} from "@std/assert";
import {
  cannotRunHere,
  matchOutput,
  moduleDoc,
  normalize,
  notRunReason,
  type Session,
  sessionsIn,
  strayCommands,
  Workspace,
} from "./_docs.ts";
import { repoPath } from "./_helpers.ts";
import { commonFlagsTable, serverHelps } from "../tasks/flags.ts";

// DOCS_ONLY=servers/echo.ts runs the sessions of one file (while writing).
const ONLY = Deno.env.get("DOCS_ONLY");
const FILES = ["README.md", "bench/README.md"];
for (const dir of ["servers", "clients", "tasks"]) {
  for (
    const entry of [...Deno.readDirSync(repoPath(dir))].sort((a, b) =>
      a.name < b.name ? -1 : 1
    )
  ) {
    if (entry.name.endsWith(".ts")) FILES.push(`${dir}/${entry.name}`);
  }
}

/** README.md as it is; a script's module doc without its comment stars. */
function docText(file: string): string {
  const text = Deno.readTextFileSync(repoPath(file));
  return file.endsWith(".md") ? text : moduleDoc(text);
}

const SESSIONS: Session[] = FILES.filter((file) => !ONLY || file === ONLY)
  .flatMap((file) => sessionsIn(file, docText(file)));

Deno.test("the README and every script's module doc show their commands in sh sessions only", () => {
  for (const file of FILES) {
    assertEquals(
      strayCommands(docText(file)),
      [],
      `${file} shows commands outside a \`\`\`sh block (the tests run only those)`,
    );
    if (/^(servers|clients)\//.test(file)) {
      assertGreater(
        sessionsIn(file, docText(file)).length,
        0,
        `${file}'s module doc has no \`\`\`sh session`,
      );
    }
  }
});

Deno.test("the README's apt-get line installs the Debian packages .ci/run installs (.ci/debian-packages)", () => {
  const listed = Deno.readTextFileSync(repoPath(".ci/debian-packages"))
    .split("\n").map((line) => line.trim())
    .filter((line) => line !== "" && !line.startsWith("#"));
  const readme = Deno.readTextFileSync(repoPath("README.md"))
    .replace(/\s+/g, " ");
  const lines = [...readme.matchAll(/apt-get install -y ([a-z0-9. -]+)/g)];
  assertEquals(lines.length, 1, "the README has one apt-get install line");
  assertEquals(lines[0][1].trim().split(" "), listed);
});

/** A Markdown table's rows as trimmed cells (`deno fmt` pads them). */
function tableCells(rows: string[]): string[][] {
  return rows.map((row) =>
    row.trim().replace(/^\||\|$/g, "").split(/(?<!\\)\|/)
      .map((cell) => cell.trim().replace(/^:?-+:?$/, "---"))
  );
}

Deno.test("the README's server flag table is the one tasks/flags.ts makes from the servers' --help", async () => {
  const generated = commonFlagsTable(await serverHelps()).split("\n");
  const readme = Deno.readTextFileSync(repoPath("README.md")).split("\n");
  const start = readme.findIndex((line) => line.startsWith("| server flag "));
  assertGreater(start, -1, "the README has no '| server flag |' table");
  let end = start;
  while (readme[end]?.startsWith("|")) end++;
  assertEquals(
    tableCells(readme.slice(start, end)),
    tableCells(generated),
    "README.md's table is not what `deno run --allow-read=. --allow-run=deno tasks/flags.ts` prints",
  );
});

Deno.test("bench/README.md says which run bench/figures.svg draws, and exactly which groups", () => {
  const svg = Deno.readTextFileSync(repoPath("bench/figures.svg"));
  const texts = [...svg.matchAll(/<text[^>]*>([^<]*)<\/text>/g)].map((m) =>
    m[1]
  );
  const started = /\d{4}-\d\d-\d\dT[\d:.]+Z/.exec(texts[0] ?? "")?.[0];
  assert(started, `the figure names no run: ${texts[0]}`);
  const drawn = texts.map((text) => /^(.*) \([^)]*\)$/.exec(text)?.[1])
    .filter((group): group is string => group !== undefined);
  const readme = Deno.readTextFileSync(repoPath("bench/README.md"))
    .replace(/\s+/g, " ");
  assert(readme.includes(`started ${started}`), `no run started ${started}`);
  const said = /It draws these groups: ([^.]*)\./.exec(readme)?.[1];
  assert(said, "bench/README.md does not say which groups the figure draws");
  assertEquals(
    [...said.matchAll(/`([^`]+)`/g)].map((m) => m[1]),
    drawn,
  );
});

const NO_HAPROXY = new Deno.Command("sh", {
    args: ["-c", "command -v haproxy"],
    stdout: "null",
  }).outputSync().success
  ? undefined
  : "haproxy is not installed (.ci/run installs it)";
if (NO_HAPROXY) {
  console.error(`SKIP: the README's haproxy example: ${NO_HAPROXY}`);
}

Deno.test({
  name: "the README's haproxy example passes haproxy -c without a warning",
  ignore: NO_HAPROXY !== undefined,
  async fn() {
    // The README's one fenced block without a language: the configuration.
    const blocks: string[] = [];
    let block: string[] | undefined;
    let fence: string | undefined;
    for (
      const line of Deno.readTextFileSync(repoPath("README.md")).split("\n")
    ) {
      if (line.startsWith("```")) {
        if (fence === undefined) {
          fence = line.slice(3);
          if (fence === "") block = [];
        } else {
          if (block) blocks.push(block.join("\n") + "\n");
          fence = block = undefined;
        }
      } else block?.push(line);
    }
    const config = blocks.find((text) => text.includes("send-proxy"));
    assert(config, "the README shows no haproxy configuration");
    const file = await Deno.makeTempFile({ suffix: ".cfg" });
    try {
      await Deno.writeTextFile(file, config);
      const { code, stdout, stderr } = await new Deno.Command("haproxy", {
        args: ["-c", "-f", file],
      }).output();
      const output = new TextDecoder().decode(stdout) +
        new TextDecoder().decode(stderr);
      assertEquals(code, 0, output);
      assertEquals(output.match(/\[(WARNING|ALERT)\].*/g), null, output);
    } finally {
      await Deno.remove(file);
    }
  },
});

Deno.test("the README's library example passes with the permission it names, and only with it", async () => {
  const readme = Deno.readTextFileSync(repoPath("README.md"));
  const example = /```ts\n([\s\S]*?)```/.exec(readme)?.[1];
  assert(example, "the README has no ```ts example");
  const permission = /run it with\s+`deno test (--allow-[^`\s]+)`/.exec(
    readme.replace(/\s+/g, " "),
  )?.[1];
  assert(permission, "the README does not say which permission it needs");
  // Beside mod.ts, as a user's file in the repository would be.
  const file = await Deno.makeTempFile({
    dir: repoPath(""),
    prefix: ".readme-example-",
    suffix: "_test.ts",
  });
  try {
    await Deno.writeTextFile(file, example);
    const run = (flags: string[]) =>
      new Deno.Command(Deno.execPath(), {
        args: ["test", ...flags, file],
        cwd: repoPath(""),
        env: { NO_COLOR: "1" },
      }).output();
    const granted = await run([permission]);
    assertEquals(
      granted.code,
      0,
      new TextDecoder().decode(granted.stdout) +
        new TextDecoder().decode(granted.stderr),
    );
    assert(!(await run([])).success, "it passed with no permission at all");
  } finally {
    await Deno.remove(file);
  }
});

Deno.test("the README reads in one sitting: under 300 lines (the rest is in the module docs and bench/README.md)", () => {
  const lines = Deno.readTextFileSync(repoPath("README.md")).split("\n");
  assertLess(lines.length - 1, 300);
});

const WHY_NOT = cannotRunHere();
if (WHY_NOT) console.error(`SKIP: doc sessions: ${WHY_NOT}`);
const space = WHY_NOT ? undefined : await Workspace.create();
if (space) {
  addEventListener("unload", () => {
    try {
      Deno.removeSync(space.root, { recursive: true });
    } catch {
      // Removed by the last test below.
    }
  });
}

for (const session of SESSIONS) {
  const reason = WHY_NOT || notRunReason(session);
  if (reason && !WHY_NOT) console.error(`SKIP: ${session.where}: ${reason}`);
  Deno.test({
    name: `doc session ${session.where} runs as shown (${
      session.steps.map((s) => s.command.split(" ").slice(0, 3).join(" "))
        .join("; ")
    })`,
    ignore: reason !== undefined && reason !== "",
    sanitizeResources: false,
    sanitizeOps: false,
    async fn() {
      await space!.run(session);
    },
  });
}

Deno.test("a session's output check: shown lines must be printed, printed lines shown; ... stands for any", () => {
  assertEquals(matchOutput(["a", "b"], ["a", "b"]), []);
  // A line not printed by the command is left for a background command.
  assertEquals(matchOutput(["a"], ["a", "accepted 127.0.0.1:50000"]), [
    "accepted 127.0.0.1:<port>",
  ]);
  assertEquals(matchOutput(["x", "y", "z"], ["x", "...", "z"]), []);
  assertEquals(matchOutput(["x", "y"], ["x", "..."]), []);
  assertThrows(() => matchOutput(["a", "b"], ["a"]), AssertionError, '"b"');
  assertEquals(
    normalize("Wed Nov 25 14:59:03 2026 at 127.0.0.1:43122, 12:00:01.123456"),
    "<date> at 127.0.0.1:<port>, <clock>",
  );
  // rdate and `date` name the zone; a ctime line does not: never the same.
  assertEquals(
    normalize("Mon Dec  7 16:27:51 UTC 2026"),
    "<date UTC>",
  );
  assert(
    normalize("Mon Dec  7 16:27:51 2026") !==
      normalize("Mon Dec  7 16:27:51 UTC 2026"),
  );
  assertEquals(
    normalize("listening on 0.0.0.0:15000"),
    "listening on 0.0.0.0:15000",
  );
});

Deno.test("sessions parse: continuations, background, root, comments", () => {
  const [session] = sessionsIn(
    "x.md",
    "```sh\n$ deno run a \\\n    b &   # as root\nlistening on x\n$ echo 'hi # there'  # note\nhi # there\n```\n",
  );
  assertEquals(session.steps, [
    {
      command: "deno run a b",
      expected: ["listening on x"],
      background: true,
      root: true,
      line: 2,
    },
    {
      command: "echo 'hi # there'",
      expected: ["hi # there"],
      background: false,
      root: false,
      line: 5,
    },
  ]);
});

Deno.test({
  name: "doc sessions: the workspace is removed",
  ignore: !space,
  async fn() {
    await space![Symbol.asyncDispose]();
  },
});
