import { assert, assertEquals, assertMatch, assertRejects } from "@std/assert";
import { readExact, SIMPLE_SERVICE_PORTS, writeAll } from "../mod.ts";
import { chargenLines } from "../servers/chargen.ts";
import { readAll, runScript, spawn } from "./_helpers.ts";
import { freeBase, readUpTo, udpAsk } from "./_simple.ts";

const PERMISSIONS = ["--unstable-net", "--allow-net"];
const CTIME = /^\w{3} \w{3} [ 123]\d \d\d:\d\d:\d\d \d{4}\r\n$/;
const decoder = new TextDecoder();

Deno.test("inetd.ts serves all six services on TCP and UDP; one SIGTERM stops all, exit 0", async () => {
  const base = freeBase();
  await using proc = spawn("servers/inetd.ts", {
    permissions: PERMISSIONS,
    args: ["--hostname", "127.0.0.1", "--base", String(base)],
  });
  await proc.waitForStderr(/\(time\/udp\)$/);
  const listening = proc.stderrLines.filter((l) =>
    l.startsWith("listening on")
  );
  const expected = Object.entries(SIMPLE_SERVICE_PORTS).flatMap((
    [name, port],
  ) =>
    ["tcp", "udp"].map((t) =>
      `listening on 127.0.0.1:${base + port} (${name}/${t})`
    )
  );
  assertEquals(listening.toSorted(), expected.toSorted());
  const port = (name: keyof typeof SIMPLE_SERVICE_PORTS) =>
    base + SIMPLE_SERVICE_PORTS[name];
  const connect = () => ({ hostname: "127.0.0.1" });

  // TCP
  {
    using conn = await Deno.connect({ ...connect(), port: port("echo") });
    await writeAll(conn, new TextEncoder().encode("ping"));
    assertEquals(decoder.decode(await readExact(conn, 4)), "ping");
  }
  {
    using conn = await Deno.connect({ ...connect(), port: port("discard") });
    await writeAll(conn, new Uint8Array(1000));
    await conn.closeWrite();
    assertEquals((await readAll(conn)).byteLength, 0);
  }
  {
    using conn = await Deno.connect({ ...connect(), port: port("daytime") });
    assertMatch(decoder.decode(await readAll(conn)), CTIME);
  }
  {
    using conn = await Deno.connect({ ...connect(), port: port("qotd") });
    const quotation = await readAll(conn);
    assert(quotation.byteLength > 0 && quotation.byteLength <= 512);
    assert(decoder.decode(quotation).endsWith("\r\n"));
  }
  {
    using conn = await Deno.connect({ ...connect(), port: port("chargen") });
    assertEquals(await readUpTo(conn, 740), chargenLines(0, 10));
  }
  {
    using conn = await Deno.connect({ ...connect(), port: port("time") });
    assertEquals((await readAll(conn)).byteLength, 4);
  }
  // UDP
  assertEquals(decoder.decode((await udpAsk(port("echo"), "pong"))!), "pong");
  assertEquals(await udpAsk(port("discard"), "x", { timeoutMs: 300 }), null);
  assertMatch(decoder.decode((await udpAsk(port("daytime")))!), CTIME);
  const quotation = await udpAsk(port("qotd"));
  assert(quotation && quotation.byteLength <= 512);
  assertEquals(await udpAsk(port("chargen")), chargenLines(0, 6));
  assertEquals((await udpAsk(port("time")))?.byteLength, 4);

  proc.kill("SIGTERM");
  const { code, stderr } = await proc.finished();
  assertEquals(code, 0, stderr);
  // Every socket is closed: nothing answers any more.
  for (
    const name of Object.keys(
      SIMPLE_SERVICE_PORTS,
    ) as (keyof typeof SIMPLE_SERVICE_PORTS)[]
  ) {
    await assertRejects(
      () => Deno.connect({ ...connect(), port: port(name) }),
      Deno.errors.ConnectionRefused,
    );
  }
});

Deno.test("inetd.ts --only and --except choose services; --tcp-only the transport", async () => {
  for (
    const [args, names] of [
      [["--only", "echo,time"], [
        "echo/tcp",
        "echo/udp",
        "time/tcp",
        "time/udp",
      ]],
      [["--except", "chargen,qotd,discard,echo", "--tcp-only"], [
        "daytime/tcp",
        "time/tcp",
      ]],
    ] as const
  ) {
    const base = freeBase();
    await using proc = spawn("servers/inetd.ts", {
      permissions: PERMISSIONS,
      args: ["--hostname", "127.0.0.1", "--base", String(base), ...args],
    });
    await proc.waitForStderr(
      new RegExp(`\\(${names.at(-1)!.replace("/", "\\/")}\\)$`),
    );
    const labels = proc.stderrLines.flatMap((l) =>
      /^listening on \S+ \((.*)\)$/.exec(l)?.[1] ?? []
    );
    assertEquals(labels, [...names]);
    proc.kill("SIGTERM");
    assertEquals((await proc.finished()).code, 0);
  }
});

Deno.test("inetd.ts: when one port is taken, nothing listens and it exits 1 with one line", async () => {
  const base = freeBase();
  using _taken = Deno.listen({ hostname: "127.0.0.1", port: base + 19 });
  const { code, stderr } = await runScript("servers/inetd.ts", {
    permissions: PERMISSIONS,
    args: ["--hostname", "127.0.0.1", "--base", String(base)],
  });
  assertEquals(code, 1);
  assertEquals(
    stderr,
    `error: address 127.0.0.1:${
      base + 19
    } is already in use (pick another base with --base)`,
  );
});

Deno.test("inetd.ts: usage errors exit 2 with one error line", async () => {
  for (
    const [args, message] of [
      [
        ["--only", "echo,finger"],
        /^error: unknown service 'finger' for --only/,
      ],
      [
        ["--only", "echo", "--except", "time"],
        /^error: --only and --except cannot be used together$/,
      ],
      [["--base", "65500"], /^error: invalid value '65500' for --base/],
      [["--port", "7"], /^error: unknown option '--port'/],
    ] as const
  ) {
    const { code, stderr } = await runScript("servers/inetd.ts", {
      permissions: PERMISSIONS,
      args: [...args],
    });
    assertEquals(code, 2, stderr);
    assertMatch(stderr, message);
    assertEquals(stderr.split("\n").length, 1, stderr);
  }
});
