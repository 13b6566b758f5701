/**
 * A missing permission's hint is the whole `deno run` line that works: a
 * task (`deno task echo --port P`) or an installed command takes no Deno
 * flags, so "run with --allow-net=..." could not be followed. Each case
 * runs the task as a user would, takes the line its hint gives, runs that
 * line, and checks that it gets past what was missing.
 */

import { assert, assertEquals, assertMatch } from "@std/assert";
import {
  freePort,
  makeCertificates,
  repoPath,
  ScriptProcess,
} from "./_helpers.ts";

const decoder = new TextDecoder();
const PATH = `${Deno.execPath().replace(/\/[^/]*$/, "")}:${
  Deno.env.get("PATH") ?? ""
}`;

function shell(line: string): Deno.Command {
  return new Deno.Command("sh", {
    args: ["-c", `exec ${line}`],
    cwd: repoPath(""),
    env: { PATH, NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
}

/** Runs `deno task ARGS`; returns the command its one error line hints. */
async function hintedCommand(args: string): Promise<string> {
  const { code, stderr } = await shell(`deno task ${args}`).output();
  const lines = decoder.decode(stderr).split("\n")
    .filter((line) => line !== "" && !line.startsWith("Task "));
  assertEquals(code, 1, lines.join("\n"));
  assertEquals(lines.length, 1, lines.join("\n"));
  const hint = /run again as: (deno run .*?)\)?$/.exec(lines[0]);
  assert(hint, `no whole command in: ${lines[0]}`);
  return hint[1];
}

/** Runs a server's hinted line until it listens, then stops it. */
async function assertServes(line: string, address: string): Promise<void> {
  await using proc = new ScriptProcess(shell(line).spawn());
  await proc.waitForStderr(/^(listening on|error)/);
  assertMatch(proc.stderr, new RegExp(`^listening on ${address}$`, "m"));
  await proc.terminate();
}

Deno.test("deno task echo --port P: the hint is a deno run line that serves there", async () => {
  const port = freePort();
  const line = await hintedCommand(
    `echo --hostname 127.0.0.1 --port ${port}`,
  );
  assertEquals(
    line,
    `deno run --allow-net=127.0.0.1:${port} servers/echo.ts --hostname 127.0.0.1 --port ${port}`,
  );
  await assertServes(line, `127.0.0.1:${port}`);
});

Deno.test("deno task exec -- date: the hint grants the program and the listen address", async () => {
  const port = freePort();
  const line = await hintedCommand(
    `exec --hostname 127.0.0.1 --port ${port} -- date`,
  );
  assertEquals(
    line,
    `deno run --allow-net=127.0.0.1:${port} --allow-run=date servers/exec.ts --hostname 127.0.0.1 --port ${port} -- date`,
  );
  await assertServes(line, `127.0.0.1:${port}`);
});

Deno.test("deno task connect --tls --ca FILE: the hint reads the CA and connects", async () => {
  await using certs = await makeCertificates();
  const port = freePort(); // Nothing listens: the line gets to connecting.
  const line = await hintedCommand(
    `connect --tls --ca ${certs.ca} 127.0.0.1 ${port}`,
  );
  assertEquals(
    line,
    `deno run --allow-net=127.0.0.1:${port} --allow-read=${certs.ca} clients/connect.ts --tls --ca ${certs.ca} 127.0.0.1 ${port}`,
  );
  const { code, stderr } = await shell(line).output();
  assertEquals(code, 1);
  assertEquals(
    decoder.decode(stderr).trim().split("\n").at(-1),
    `error: connection refused by 127.0.0.1:${port}`,
  );
});
