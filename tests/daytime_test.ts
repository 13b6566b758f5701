import { assert, assertEquals, assertLess, assertMatch } from "@std/assert";
import { parsePosixTimeZone } from "../mod.ts";
import { ctime } from "../servers/daytime.ts";
import {
  missing,
  readAll,
  repoPath,
  runCommand,
  runScript,
  startServer,
} from "./_helpers.ts";
import { udpAsk } from "./_simple.ts";

const CTIME_LINE =
  /^(Sun|Mon|Tue|Wed|Thu|Fri|Sat) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ 123]\d \d\d:\d\d:\d\d \d{4}\r\n$/;

// Seconds since 1970, chosen for single-digit days, DST changes in both
// hemispheres, leap days, both sides of 1970 and of 2038.
const MOMENTS = [
  0,
  -14182940, // 1969-07-20T20:17:40Z
  946684799, // 1999-12-31T23:59:59Z
  1709164800, // 2024-02-29T00:00:00Z
  1772963999, // 2026-03-08T09:59:59Z (US DST starts at 10:00Z)
  1774746000, // 2026-03-29T01:00:00Z (EU DST starts)
  1775350800, // 2026-04-05 (southern hemisphere DST ends)
  1793754301, // 2026-11-04T09:05:01Z
  1794110400, // 2026-11-08
  2147483648, // 2038-01-19T03:14:08Z
  4107542400, // 2100-03-01T00:00:00Z
];

const ZONES = [
  "UTC",
  "America/New_York",
  "Europe/Berlin",
  "Asia/Kolkata",
  "Australia/Lord_Howe",
  "America/St_Johns",
  "Pacific/Chatham",
  "Pacific/Kiritimati",
  "EST5EDT",
  "JST-9",
  ":Europe/Paris",
  // POSIX rule strings, which ICU does not know: lib/tz.ts applies them.
  "<+0530>-5:30",
  "IST-5:30",
  "CET-1CEST,M3.5.0,M10.5.0/3",
  "AEST-10AEDT,M10.1.0,M4.1.0/3",
  "NZST-12NZDT,M9.5.0,M4.1.0/3",
  "<-03>3<-02>,M3.5.0/-2,M10.5.0/-1",
  "EST5EDT4,M3.2.0/2,M11.1.0/2",
  "WART4WARST,J1/0,J365/25",
  "ABC-3DEF-4,100/2,300/3",
];

const C_FIXTURE = `#include <stdio.h>
#include <stdlib.h>
#include <time.h>
int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    time_t t = (time_t)strtoll(argv[i], NULL, 10);
    fputs(ctime(&t), stdout);
  }
  return 0;
}
`;

async function run(
  command: string,
  args: string[],
  env: Record<string, string>,
): Promise<string> {
  const output = await new Deno.Command(command, {
    args,
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(output.stderr);
  assertEquals(output.code, 0, stderr);
  return new TextDecoder().decode(output.stdout);
}

Deno.test({
  name: "ctime() prints what C's ctime() prints, in many time zones",
  ignore: missing("gcc"),
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "simple5-ctime-" });
    try {
      await Deno.writeTextFile(`${dir}/ctime.c`, C_FIXTURE);
      const compiled = await runCommand("gcc", [
        "-o",
        `${dir}/ctime`,
        `${dir}/ctime.c`,
      ]);
      assertEquals(compiled.code, 0, compiled.stderr);
      const args = MOMENTS.map(String);
      const script = `import { ctime } from ${
        JSON.stringify(repoPath("servers/daytime.ts"))
      };
for (const s of ${
        JSON.stringify(MOMENTS)
      }) console.log(ctime(new Date(s * 1000)));`;
      for (const tz of ZONES) {
        const [fromC, fromDeno] = await Promise.all([
          run(`${dir}/ctime`, args, { TZ: tz }),
          run(Deno.execPath(), ["eval", "--quiet", script], {
            TZ: tz,
            NO_COLOR: "1",
          }),
        ]);
        assertEquals(fromC.split("\n").length, MOMENTS.length + 1);
        assertEquals(fromDeno, fromC, `TZ=${tz}`);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("ctime() pads a single-digit day with a space and is 24 characters", () => {
  const line = ctime(new Date(2026, 10, 4, 9, 5, 1));
  assertEquals(line, "Wed Nov  4 09:05:01 2026");
  assertEquals(
    ctime(new Date(2026, 10, 24, 23, 37, 45)),
    "Tue Nov 24 23:37:45 2026",
  );
  assertEquals(ctime(new Date(12026, 0, 1)).length, 24);
});

Deno.test("daytime.ts, with its header's permissions, sends the local time over TCP and UDP", async () => {
  const before = Date.now();
  {
    await using server = await startServer("servers/daytime.ts", {
      permissions: ["--allow-net=127.0.0.1:0"],
      args: ["--hostname", "127.0.0.1", "--port", "0"],
      env: { TZ: "Asia/Kolkata" },
    });
    using conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: server.port,
    });
    const line = new TextDecoder().decode(await readAll(conn));
    assertMatch(line, CTIME_LINE);
    // Asia/Kolkata is UTC+05:30, all year.
    const sent = Date.parse(line.trim() + " GMT+0530");
    assertLess(Math.abs(sent - before), 5000, `${line} vs ${new Date(before)}`);
    server.proc.kill("SIGTERM");
    const { code, stderr } = await server.proc.finished();
    assertEquals(code, 0, stderr);
    assertMatch(
      stderr,
      /closed 127\.0\.0\.1:\d+ \(0 bytes in, 26 bytes out\)/,
    );
  }
  {
    await using server = await startServer("servers/daytime.ts", {
      permissions: ["--unstable-net", "--allow-net"],
      args: ["--hostname", "127.0.0.1", "--port", "0", "--udp"],
      env: { TZ: "UTC" },
    });
    const reply = await udpAsk(server.port, "what time is it?");
    assert(reply, "a reply");
    const line = new TextDecoder().decode(reply);
    assertMatch(line, CTIME_LINE);
    assert(
      Math.abs(Date.parse(line.trim() + " UTC") - Date.now()) < 5000,
      line,
    );
  }
});

Deno.test({
  name:
    "daytime.ts as an unprivileged user: port 13 fails with the whole command that works as a user",
  ignore: missing("setpriv") || Deno.uid() !== 0,
  async fn() {
    const denoDir = await Deno.makeTempDir({ prefix: "simple5-nobody-" });
    try {
      await Deno.chmod(denoDir, 0o777);
      const { code, stderr } = await runCommand("setpriv", [
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "env",
        `DENO_DIR=${denoDir}`,
        "NO_COLOR=1",
        Deno.execPath(),
        "run",
        "--quiet",
        "--no-prompt",
        "--allow-net=0.0.0.0:13",
        repoPath("servers/daytime.ts"),
      ]);
      assertEquals(code, 1, stderr);
      assertEquals(
        stderr,
        "error: permission denied listening on 0.0.0.0:13: ports below 1024 " +
          "need root or CAP_NET_BIND_SERVICE; as a user: " +
          "deno run --allow-net=0.0.0.0:10013 servers/daytime.ts --port 10013\n",
      );
    } finally {
      await Deno.remove(denoDir, { recursive: true });
    }
  },
});

Deno.test("daytime.ts: --help exits 0, a bad flag exits 2 with one error line", async () => {
  const help = await runScript("servers/daytime.ts", { args: ["--help"] });
  assertEquals(help.code, 0);
  assertMatch(help.stdout, /^usage: daytime\.ts/);
  const bad = await runScript("servers/daytime.ts", {
    args: ["--port", "70000"],
  });
  assertEquals(bad.code, 2);
  assertMatch(bad.stderr, /^error: invalid value '70000' for --port[^\n]*$/);
});

Deno.test("daytime.ts --allow-env=TZ applies a POSIX rule TZ that Date reads as UTC", async () => {
  await using server = await startServer("servers/daytime.ts", {
    permissions: ["--allow-net=127.0.0.1:0", "--allow-env=TZ"],
    args: ["--hostname", "127.0.0.1", "--port", "0"],
    env: { TZ: "<+0530>-5:30" },
  });
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  const line = new TextDecoder().decode(await readAll(conn));
  assertMatch(line, CTIME_LINE);
  const sent = Date.parse(line.trim() + " GMT+0530");
  assertLess(Math.abs(sent - Date.now()), 5000, line);
});

Deno.test("parsePosixTimeZone() reads POSIX TZ strings and refuses anything else", () => {
  const zone = parsePosixTimeZone("<-03>3<-02>,M3.5.0/-2,M10.5.0/-1")!;
  assertEquals(zone.standardName, "-03");
  assertEquals(zone.standardOffsetSeconds, -3 * 3600);
  assertEquals(zone.daylightOffsetSeconds, -2 * 3600);
  assertEquals(parsePosixTimeZone("IST-5:30")!.standardOffsetSeconds, 19800);
  for (
    const bad of [
      "",
      "Europe/Paris",
      "UTC",
      "AB-1",
      "CET-1CEST,M13.1.0,M10.5.0",
      "CET-1CEST,M3.5.0",
      "X-1Y,J0,J1",
    ]
  ) {
    assertEquals(parsePosixTimeZone(bad), null, bad);
  }
});

/** Serves one daytime answer with `permissions` and `env`; its log lines. */
async function logOfOneAnswer(
  permissions: string[],
  env: Record<string, string>,
): Promise<string[]> {
  const server = await startServer("servers/daytime.ts", {
    permissions,
    args: ["--hostname", "127.0.0.1", "--port", "0"],
    env,
  });
  {
    using conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: server.port,
    });
    assertMatch(new TextDecoder().decode(await readAll(conn)), CTIME_LINE);
  }
  await server.proc.waitForStderr(/^closed /);
  await server.proc.terminate();
  return server.proc.stderr.split("\n");
}

Deno.test("daytime.ts says nothing of TZ when it is unset, or may not be read", async () => {
  for (
    const permissions of [
      ["--allow-net=127.0.0.1:0", "--allow-env=TZ"],
      ["--allow-net=127.0.0.1:0"],
    ]
  ) {
    const lines = await logOfOneAnswer(permissions, { TZ: "" });
    assertEquals(
      lines.filter((line) => /\bTZ\b|local time/.test(line)),
      [],
      `${permissions.join(" ")}:\n${lines.join("\n")}`,
    );
  }
});

Deno.test("daytime.ts --allow-env=TZ: a TZ it cannot read is one log line saying local time is UTC", async () => {
  const lines = await logOfOneAnswer(
    ["--allow-net=127.0.0.1:0", "--allow-env=TZ"],
    { TZ: "Nowhere/Atlantis" },
  );
  assertEquals(
    lines.filter((line) => /\bTZ\b/.test(line)),
    [
      "TZ='Nowhere/Atlantis' is neither a zone name (Europe/Paris) nor a POSIX rule (CET-1CEST,M3.5.0,M10.5.0/3): local time is UTC",
    ],
  );
});
