/**
 * The command-line layer over `@std/cli`: the contract every script keeps
 * (one `error:` line naming the flag, exit 2, nothing on stdout), the cases
 * where `parseArgs` alone is lenient, and flags that would do nothing.
 */

import { assertEquals, assertMatch, assertThrows } from "@std/assert";
import {
  flag,
  flagsHelp,
  HelpRequested,
  parseCommandLine,
  serverFlags,
  serverOptionsFromFlags,
  UsageError,
} from "../mod.ts";
import { assertUsageError, repoPath, runScript } from "./_helpers.ts";

const FLAGS = {
  port: flag.integer("P", "port", { min: 0, max: 65535 }),
  udp: flag.boolean("udp"),
  name: flag.string("N", "a name"),
  allow: flag.list("CIDR", "allow"),
};
const SPEC = { usage: "usage: x", flags: FLAGS, positionals: ["HOST"], min: 0 };

function usageError(args: string[], includes: string): void {
  assertThrows(() => parseCommandLine(args, SPEC), UsageError, includes);
}

Deno.test("parseCommandLine: what parseArgs alone would accept is a usage error", () => {
  assertThrows(
    () => parseCommandLine(["--udp", "true"], { usage: "", flags: FLAGS }),
    UsageError,
    "unexpected argument 'true'",
  );
  usageError(["--udp=false"], "option '--udp' takes no value");
  usageError(["--port", "1", "--port", "2"], "option '--port' given twice");
  usageError(["--port"], "option '--port' needs a value");
  usageError(["--port", "--udp"], "option '--port' needs a value");
  usageError(["--no-udp"], "unknown option '--no-udp'");
  usageError(["-u"], "unknown option '-u'");
  usageError(["--port", "1e3"], "invalid value '1e3' for --port");
  usageError(["--name="], "invalid value '' for --name");
  usageError(["a", "b"], "unexpected argument 'b'");
});

Deno.test("parseCommandLine: both value forms, --, repeatable lists, raw positionals", () => {
  const { values, positionals } = parseCommandLine(
    ["--port=7", "--allow", "::1", "--allow=10.0.0.0/8", "--", "1e3"],
    SPEC,
  );
  assertEquals(values, {
    port: 7,
    udp: false,
    name: undefined,
    allow: ["::1", "10.0.0.0/8"],
  });
  // parseArgs alone turns a numeric positional into a number (1e3 -> 1000).
  assertEquals(positionals, ["1e3"]);
  assertEquals(
    parseCommandLine(["--name=-x", "-"], SPEC).values.name,
    "-x",
  );
  assertThrows(() => parseCommandLine(["-h"], SPEC), HelpRequested);
});

Deno.test("durations: a positive value never rounds to 0 (off)", () => {
  for (const text of ["0.0004", "0.0001", "0.0005"]) {
    const { values } = parseCommandLine(["--idle-timeout", text], {
      usage: "",
      flags: serverFlags({ port: 7 }),
    });
    assertEquals(values["idle-timeout"], 1, text);
  }
});

Deno.test("server flags that do nothing for the transport are usage errors", () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ "udp-rate": 5 }, /--udp-rate applies to --udp and --unixpacket only/],
    [{ "allow-low-ports": true }, /--allow-low-ports applies to --udp only/],
    [{ udp: true, "max-connections": 5 }, /--max-connections applies to/],
    [{ udp: true, "idle-timeout": 5 }, /--idle-timeout applies to/],
    [{ unix: "/tmp/x.sock", keepalive: {} }, /--keepalive applies to TCP/],
  ];
  for (const [values, pattern] of cases) {
    const error = assertThrows(
      () => serverOptionsFromFlags(values),
      UsageError,
    );
    assertMatch(error.message, pattern);
  }
});

Deno.test("help lines come from the table: defaults from the constants", () => {
  const help = flagsHelp(serverFlags({ port: 7 }));
  assertMatch(help, /--port P +port \(default 7; 0 picks a free one\)/);
  assertMatch(help, /--max-connections N +most clients .*\(default 4096\)/);
  assertMatch(help, /-h, --help +print this help and exit/);
});

const UDP_PERMISSIONS = ["--unstable-net", "--allow-net"];

Deno.test("scripts: inapplicable, repeated and empty flags exit 2 with one line", async () => {
  const cases: [string, string[], string[], RegExp][] = [
    ["servers/echo.ts", ["--allow-net"], ["--udp-rate", "5"], /--udp-rate/],
    [
      "servers/echo.ts",
      ["--allow-net"],
      ["--port", "1", "--port", "2"],
      /given twice/,
    ],
    [
      "servers/echo.ts",
      ["--allow-net"],
      ["--allow-low-ports"],
      /--allow-low-ports/,
    ],
    [
      "servers/echo.ts",
      UDP_PERMISSIONS,
      ["--udp", "--max-connections", "3"],
      /--max-connections/,
    ],
    [
      "servers/echo.ts",
      UDP_PERMISSIONS,
      ["--udp", "--idle-timeout", "3"],
      /--idle-timeout/,
    ],
    [
      "servers/inetd.ts",
      UDP_PERMISSIONS,
      ["--tcp-only", "--udp-rate", "5"],
      /--udp-rate/,
    ],
    ["servers/inetd.ts", UDP_PERMISSIONS, [
      "--only",
      "echo",
      "--qotd-file",
      "q",
    ], /--qotd-file/],
    [
      "servers/inetd.ts",
      UDP_PERMISSIONS,
      ["--only", "echo,echo"],
      /'echo' named twice/,
    ],
    ["servers/qotd.ts", ["--allow-net"], ["--file", ""], /--file/],
    // Longer than a timer waits: setInterval would check every 1 ms.
    ["servers/forward.ts", ["--allow-net"], [
      "--check-interval",
      "2592000",
      "tcp://127.0.0.1:0",
      "tcp://127.0.0.1:1",
      "tcp://127.0.0.1:2",
    ], /--check-interval: expected a number of seconds, at most 2147483/],
    ["servers/echo.ts", ["--allow-net"], [
      "--grace",
      "2147484",
    ], /--grace: expected a number of seconds, at most 2147483/],
    ["servers/keepalive.ts", ["--allow-net"], [""], /ADDRESS is empty/],
    ["clients/daytime.ts", ["--allow-net"], [], /missing argument ADDRESS/],
  ];
  for (const [script, permissions, args, pattern] of cases) {
    await assertUsageError(script, permissions, args, pattern);
  }
});

Deno.test("scripts: -h prints the help on stdout and exits 0", async () => {
  const { code, stdout } = await runScript("servers/echo.ts", {
    permissions: [],
    args: ["-h"],
  });
  assertEquals(code, 0);
  assertMatch(stdout, /^usage: echo\.ts/);
});

Deno.test("clients/daytime.ts --timeout 0.0004 gives up instead of waiting forever", async () => {
  // A listener that never answers: the client must time out, not hang.
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  const accepted = listener.accept();
  const { code, stderr } = await runScript("clients/daytime.ts", {
    permissions: [`--allow-net=127.0.0.1:${port}`],
    args: ["--port", String(port), "--timeout", "0.0004", "127.0.0.1"],
  });
  (await accepted.catch(() => undefined))?.close();
  assertEquals(code, 1, stderr);
  assertMatch(stderr, /^error: .*/);
});

Deno.test("no --help text writes a default by hand: each comes from its constant", async () => {
  // A default in a help text is interpolated (`(default ${PORT})`) or comes
  // from the flag table; a literal one drifts from the code it describes.
  const literal = /\(default:? [0-9]|default [0-9][0-9.]*\)/;
  const found: string[] = [];
  for (const dir of ["servers", "clients", "lib", "tasks"]) {
    for await (const entry of Deno.readDir(repoPath(dir))) {
      if (!entry.name.endsWith(".ts")) continue;
      const text = await Deno.readTextFile(repoPath(`${dir}/${entry.name}`));
      text.split("\n").forEach((line, i) => {
        if (/^\s*(\*|\/\/)/.test(line)) return;
        if (literal.test(line)) found.push(`${dir}/${entry.name}:${i + 1}`);
      });
    }
  }
  assertEquals(found, []);
});

/** The scripts in servers/ and clients/, as paths. */
function scriptPaths(): string[] {
  return ["servers", "clients"].flatMap((dir) =>
    [...Deno.readDirSync(repoPath(dir))]
      .filter((entry) => entry.name.endsWith(".ts"))
      .map((entry) => `${dir}/${entry.name}`)
  ).sort();
}

Deno.test("every script's --help names only flags that script takes (and Deno's)", async () => {
  const stray: string[] = [];
  for (const script of scriptPaths()) {
    const { code, stdout } = await runScript(script, {
      permissions: [],
      args: ["--help"],
    });
    assertEquals(code, 0, script);
    const taken = new Set(
      [...stdout.matchAll(/^ {2}(?:-h, )?--([a-z0-9-]+)/gm)].map((m) => m[1]),
    );
    for (const [mention, name] of stdout.matchAll(/--([a-z][a-z0-9-]*)/g)) {
      if (/^(allow-|unstable-)|^config$/.test(name)) continue;
      if (!taken.has(name)) stray.push(`${script}: ${mention}`);
    }
  }
  assertEquals([...new Set(stray)], []);
});

Deno.test("usage errors suggest only what the script takes: no unixpacket: from forward.ts, no --unixpacket from exec.ts", async () => {
  const cases: [string, string[], RegExp][] = [
    [
      "servers/forward.ts",
      ["http://0.0.0.0:8080", "tcp://127.0.0.1:15000"],
      /^error: LISTEN: unsupported scheme in 'http:\/\/0\.0\.0\.0:8080': expected tcp:\/\/, udp:\/\/, ws:\/\/, wss:\/\/ or unix:$/,
    ],
    [
      "servers/forward.ts",
      ["unixpacket:/tmp/f.sock", "tcp://127.0.0.1:15000"],
      /^error: LISTEN: unsupported scheme in 'unixpacket:\/tmp\/f\.sock': expected tcp:\/\/, udp:\/\/, ws:\/\/, wss:\/\/ or unix:$/,
    ],
    [
      "servers/forward.ts",
      ["tcp://0.0.0.0:8080", "unixpacket:/tmp/f.sock"],
      /^error: TARGET: unsupported scheme .*expected tcp:\/\/, udp:\/\/, ws:\/\/, wss:\/\/ or unix:$/,
    ],
    [
      "servers/forward.ts",
      ["--mode", "0600", "tcp://0.0.0.0:8080", "tcp://127.0.0.1:15000"],
      /^error: --mode needs unix:$/,
    ],
    [
      "servers/forward.ts",
      ["--udp-rate", "5", "tcp://0.0.0.0:8080", "tcp://127.0.0.1:15000"],
      /^error: --udp-rate applies to udp:\/\/ only$/,
    ],
    [
      "servers/exec.ts",
      ["--mode", "0600", "--", "cat"],
      /^error: --mode needs --unix$/,
    ],
    [
      "servers/echo.ts",
      ["--mode", "0600"],
      /^error: --mode needs --unix or --unixpacket$/,
    ],
  ];
  for (const [script, args, pattern] of cases) {
    await assertUsageError(script, [], args, pattern);
  }
});
