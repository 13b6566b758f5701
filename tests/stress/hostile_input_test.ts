import {
  assert,
  assertEquals,
  assertGreater,
  assertGreaterOrEqual,
  assertLess,
  assertMatch,
  assertNotMatch,
} from "@std/assert";
import fc from "../_fast_check.ts";
import {
  EndpointError,
  flag,
  formatEndpoint,
  HelpRequested,
  joinHostPort,
  LineReader,
  LineTooLongError,
  parseCommandLine,
  parseEndpoint,
  parsePort,
  serverFlags,
  serverOptionsFromFlags,
  splitHostPort,
  UsageError,
} from "../../mod.ts";
import { pseudoRandomBytes } from "../_helpers.ts";
import { figures, sameBytes, startEcho } from "./_stress.ts";

const RUNS = 10_000;
/** Fixed, so a failure reproduces; fast-check prints the failing case. */
const SEED = 6;

function only<E extends Error>(
  kinds: (new (...args: never[]) => E)[],
  body: () => void,
): boolean {
  try {
    body();
    return true;
  } catch (error) {
    if (kinds.some((kind) => error instanceof kind)) return false;
    throw error;
  }
}

/** Pieces hostile endpoint and flag strings are made of. */
const piece = fc.oneof(
  fc.constantFrom(
    "tcp://",
    "udp://",
    "unix:",
    "unixpacket:",
    "http://",
    "[",
    "]",
    ":",
    "::",
    "::1",
    "127.0.0.1",
    "localhost",
    "0",
    "65535",
    "65536",
    "99999",
    "-1",
    "007",
    " ",
    "\0",
    "\n",
    "/",
    "//",
    "@",
    "%",
    "0x10",
    "1e3",
    "١٢٣", // Arabic-Indic digits
    "\u{1F600}",
    "\uD800",
  ),
  fc.string({ maxLength: 8 }),
  fc.fullUnicodeString({ maxLength: 4 }),
  fc.integer({ min: -70000, max: 140000 }).map(String),
);
const noise = fc.array(piece, { maxLength: 8 }).map((parts) => parts.join(""));
/** Near misses: scheme, host and port, each right, wrong or random. */
const nearMiss = fc.tuple(
  fc.constantFrom(
    "",
    "",
    "tcp://",
    "udp://",
    "unix:",
    "unixpacket:",
    "ftp://",
    "TCP://",
  ),
  fc.oneof(
    fc.constantFrom(
      "127.0.0.1",
      "localhost",
      "::1",
      "[::1]",
      "[fe80::1%eth0]",
      "example.com",
      "",
      "a b",
      "[::1",
      "[127.0.0.1]",
      "/tmp/x.sock",
      "//tmp/x.sock",
    ),
    fc.string({ maxLength: 6 }),
  ),
  fc.constantFrom(":", ":", ":", "", "::", "]:"),
  fc.oneof(
    fc.integer({ min: -5, max: 70000 }).map(String),
    fc.constantFrom("", "0", "65535", "65536", "08", "+1", " 1", "1 ", "0x1f"),
    fc.string({ maxLength: 3 }),
  ),
).map((parts) => parts.join(""));
const hostile = fc.oneof(noise, nearMiss);

Deno.test("parsePort, splitHostPort, parseEndpoint: 10,000 hostile strings each, only EndpointError, and what parses is sane", () => {
  const counts = { port: 0, split: 0, endpoint: 0 };
  const portText = fc.oneof(
    hostile,
    fc.integer({ min: -10, max: 70000 }).map(String),
  );
  fc.assert(
    fc.property(portText, (text) => {
      if (
        only([EndpointError], () => {
          const port = parsePort(text);
          assert(Number.isInteger(port) && port >= 0 && port <= 65535);
          assertMatch(text, /^[0-9]{1,5}$/);
          assertEquals(port, Number(text));
        })
      ) counts.port++;
    }),
    { numRuns: RUNS, seed: SEED },
  );
  fc.assert(
    fc.property(hostile, (text) => {
      if (
        only([EndpointError], () => {
          const { hostname, port } = splitHostPort(text);
          assertGreater(hostname.length, 0);
          assert(Number.isInteger(port) && port >= 0 && port <= 65535);
          // What parsed prints and parses back the same.
          assertEquals(splitHostPort(joinHostPort(hostname, port)), {
            hostname,
            port,
          });
        })
      ) counts.split++;
    }),
    { numRuns: RUNS, seed: SEED },
  );
  fc.assert(
    fc.property(hostile, (text) => {
      if (
        only([EndpointError], () => {
          const endpoint = parseEndpoint(text);
          if ("path" in endpoint) {
            assert(
              endpoint.path.length > 0 && !endpoint.path.includes("\0"),
            );
          } else {
            assert(endpoint.port >= 0 && endpoint.port <= 65535);
          }
          assertEquals(parseEndpoint(formatEndpoint(endpoint)), endpoint);
        })
      ) counts.endpoint++;
    }),
    { numRuns: RUNS, seed: SEED },
  );
  figures("parsers", {
    runs_each: RUNS,
    parsePort_accepted: counts.port,
    splitHostPort_accepted: counts.split,
    parseEndpoint_accepted: counts.endpoint,
  });
  // The generator reaches both sides of each parser.
  assert(counts.port > 100 && counts.split > 100 && counts.endpoint > 100);
});

const flagNames = [
  ...Object.keys(serverFlags({ port: 7 })).map((name) => `--${name}`),
  "--help",
  "--print",
  "--nope",
  "-p",
  "-",
  "--",
  "--port=",
  "--mode=0600",
  "--udp=1",
];
const flagValues = fc.oneof(
  hostile,
  fc.constantFrom(
    "0",
    "1",
    "0600",
    "777",
    "1000000",
    "1000001",
    "0.5",
    "1e9",
    "/tmp/rel6.sock",
    "127.0.0.1",
    "::1",
    "",
    "10,5,3",
  ),
);
const commandLine = fc.array(
  fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(...flagNames) },
    { weight: 3, arbitrary: flagValues },
  ),
  { maxLength: 10 },
);

Deno.test("server command lines: 10,000 hostile ones, only UsageError or HelpRequested, and accepted options are in range", () => {
  let accepted = 0;
  let usage = 0;
  let help = 0;
  fc.assert(
    fc.property(commandLine, (args) => {
      try {
        const { values } = parseCommandLine(args, {
          usage: "usage",
          flags: {
            ...serverFlags({ port: 7 }),
            print: flag.boolean("print"),
          },
        });
        const options = serverOptionsFromFlags(values);
        accepted++;
        if (options.port !== undefined) {
          assert(options.port >= 0 && options.port <= 65535);
        }
        if (options.maxConnections !== undefined) {
          assertGreaterOrEqual(options.maxConnections, 1);
        }
        for (const ms of [options.idleTimeoutMs, options.gracePeriodMs]) {
          if (ms !== undefined) assert(Number.isFinite(ms) && ms >= 0);
        }
        if (options.mode !== undefined) {
          assert(options.mode >= 0 && options.mode <= 0o777);
          assert(options.path !== undefined);
        }
      } catch (error) {
        if (error instanceof UsageError) usage++;
        else if (error instanceof HelpRequested) help++;
        else throw error;
      }
    }),
    { numRuns: RUNS, seed: SEED },
  );
  figures("cli", { runs: RUNS, accepted, usage_errors: usage, help });
  assert(accepted > 100 && usage > 100 && help > 10);
});

/** A reader handing out `data` in the given chunk sizes. */
function chunkedReader(data: Uint8Array, sizes: number[]) {
  let offset = 0;
  let i = 0;
  return {
    read(p: Uint8Array): Promise<number | null> {
      if (offset >= data.byteLength) return Promise.resolve(null);
      const size = Math.max(
        1,
        sizes.length ? sizes[i++ % sizes.length] : p.byteLength,
      );
      const n = Math.min(size, p.byteLength, data.byteLength - offset);
      p.set(data.subarray(offset, offset + n));
      offset += n;
      return Promise.resolve(n);
    },
  };
}

/** The lines LineReader should return: LF or CRLF ends a line. */
function referenceLines(
  data: Uint8Array,
  maxLength: number,
): { lines: Uint8Array[]; tooLong: boolean } {
  const lines: Uint8Array[] = [];
  let start = 0;
  while (start < data.byteLength) {
    const lf = data.indexOf(0x0a, start);
    let line: Uint8Array;
    if (lf === -1) {
      line = data.subarray(start);
      start = data.byteLength;
    } else {
      let end = lf;
      if (end > start && data[end - 1] === 0x0d) end--;
      line = data.subarray(start, end);
      start = lf + 1;
    }
    if (line.byteLength > maxLength) return { lines, tooLong: true };
    lines.push(line);
  }
  return { lines, tooLong: false };
}

Deno.test("LineReader: 10,000 hostile streams in hostile chunks give the reference lines or LineTooLongError, nothing else", async () => {
  const byte = fc.oneof(
    { weight: 2, arbitrary: fc.constantFrom(0x0a, 0x0d, 0x00, 0xff) },
    { weight: 5, arbitrary: fc.integer({ min: 0, max: 255 }) },
  );
  let tooLong = 0;
  let lineCount = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.uint8Array({ maxLength: 300 }).chain((noise) =>
        fc.tuple(
          fc.constant(noise),
          fc.array(byte, { maxLength: 300, size: "medium" }),
          fc.integer({ min: 1, max: 64 }),
          fc.array(fc.integer({ min: 1, max: 70 }), { maxLength: 5 }),
        )
      ),
      async ([noise, bytes, maxLength, sizes]) => {
        const data = new Uint8Array([...bytes, ...noise.subarray(0, 40)]);
        const expected = referenceLines(data, maxLength);
        const reader = new LineReader(chunkedReader(data, sizes), {
          maxLength,
        });
        const got: Uint8Array[] = [];
        let threw = false;
        try {
          for (let line; (line = await reader.readLine()) !== null;) {
            got.push(line);
          }
        } catch (error) {
          if (!(error instanceof LineTooLongError)) throw error;
          threw = true;
        }
        assertEquals(threw, expected.tooLong);
        assertEquals(got.length, expected.lines.length);
        got.forEach((line, i) => assert(sameBytes(line, expected.lines[i])));
        if (threw) tooLong++;
        lineCount += got.length;
      },
    ),
    { numRuns: RUNS, seed: SEED },
  );
  figures("line-reader", { runs: RUNS, lines: lineCount, too_long: tooLong });
  assert(tooLong > 100 && tooLong < RUNS - 100);
});

Deno.test("echo.ts --udp: datagrams of every size 0..65507 come back byte-exact, and it keeps running", async () => {
  await using server = await startEcho(["--udp", "--udp-rate", "0"], {
    permissions: ["--unstable-net", "--allow-net"],
  });
  const client = Deno.listenDatagram({
    transport: "udp",
    hostname: "127.0.0.1",
    port: 0,
  });
  const target: Deno.NetAddr = {
    transport: "udp",
    hostname: "127.0.0.1",
    port: server.port,
  };
  const MAX = 65507;
  const base = pseudoRandomBytes(MAX + 256, 65507);
  const buffer = new Uint8Array(65536);
  let exact = 0;
  let retries = 0;
  const started = performance.now();
  for (let size = 0; size <= MAX; size++) {
    const datagram = base.subarray(size % 251, size % 251 + size);
    for (let attempt = 0;; attempt++) {
      await client.send(datagram, target);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const reply = await Promise.race([
        client.receive(buffer).then(([data]) => data),
        new Promise<null>((resolve) => {
          timer = setTimeout(() => resolve(null), 2000);
        }),
      ]);
      clearTimeout(timer);
      if (reply) {
        if (sameBytes(reply, datagram)) exact++;
        break;
      }
      // Lost on a loaded machine (or the late reply arrives next: then the
      // size check below fails loudly instead of passing by accident).
      retries++;
      assertLess(attempt, 3, `no reply to a ${size}-byte datagram`);
    }
  }
  const seconds = (performance.now() - started) / 1000;
  client.close();
  figures("udp-sizes", {
    datagrams: MAX + 1,
    exact,
    retries,
    seconds: seconds.toFixed(1),
    MiB_each_way: ((MAX * (MAX + 1) / 2) / 1048576).toFixed(0),
  });
  assertEquals(exact, MAX + 1);
  server.proc.kill("SIGTERM");
  const { code, stderr } = await server.proc.finished();
  assertEquals(code, 0, stderr.slice(-2000));
  assertNotMatch(stderr, /Uncaught|panicked|failed/);
});
