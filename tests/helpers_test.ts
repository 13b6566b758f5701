import {
  assert,
  assertEquals,
  AssertionError,
  assertThrows,
} from "@std/assert";
import {
  assertSameBytes,
  bindable,
  freePort,
  withTlsEngine,
} from "./_helpers.ts";

Deno.test("assertSameBytes() passes equal bytes and names lengths, offset and nearby bytes otherwise", () => {
  const bytes = Uint8Array.from({ length: 100_000 }, (_, i) => i & 0xff);
  assertSameBytes(bytes, bytes.slice());
  const changed = bytes.slice();
  changed[70_000] ^= 0xff;
  const error = assertThrows(
    () => assertSameBytes(changed, bytes, "echo"),
    AssertionError,
    "echo: got 100000 bytes, expected 100000; first difference at offset 70000",
  );
  // 70000 & 0xff = 0x70; the bytes from offset 69992 on.
  assertEquals(
    error.message.split("\n").slice(1).map((l) => l.trim()),
    [
      "actual:   68 69 6a 6b 6c 6d 6e 6f 8f 71 72 73 74 75 76 77",
      "expected: 68 69 6a 6b 6c 6d 6e 6f 70 71 72 73 74 75 76 77",
    ],
  );
  assertThrows(
    () => assertSameBytes(bytes.subarray(0, 10), bytes),
    AssertionError,
    "got 10 bytes, expected 100000; first difference at offset 10",
  );
});

Deno.test("freePort() gives a port bindable on TCP and UDP", () => {
  for (const hostname of ["127.0.0.1", "::1"]) {
    const port = freePort(hostname);
    assertEquals(bindable(hostname, port), true, `${hostname} port ${port}`);
  }
});

Deno.test("freePort() draws from below the kernel's ephemeral range, where no port-0 bind or outgoing connection lands", () => {
  const low = Number(
    Deno.readTextFileSync("/proc/sys/net/ipv4/ip_local_port_range").split(
      /\s+/,
    )[0],
  );
  const ports = new Set<number>();
  for (let i = 0; i < 20; i++) {
    const port = freePort();
    assert(port >= 20000 && port < low, `${port} not in [20000, ${low})`);
    ports.add(port);
  }
  assert(ports.size > 1, "always the same port");
});

Deno.test("withTlsEngine() puts --tls-engine right after a server's --tls, and nowhere else", () => {
  const exec = ["--tls", "--cert", "c", "--key", "k", "--", "cat", "--tls"];
  assertEquals(withTlsEngine("servers/exec.ts", exec, "node"), [
    "--tls",
    "--tls-engine",
    "node",
    ...exec.slice(1),
  ]);
  // Unset, a client, no --tls, or an engine named already: as given.
  const cases: [string, string[], "node" | undefined][] = [
    ["servers/echo.ts", ["--tls"], undefined],
    ["clients/connect.ts", ["--tls", "h", "1"], "node"],
    ["servers/forward.ts", ["--to-tls", "a", "b"], "node"],
    ["servers/echo.ts", ["--tls", "--tls-engine", "auto"], "node"],
  ];
  for (const [program, args, engine] of cases) {
    assertEquals(withTlsEngine(program, args, engine), args);
  }
});
