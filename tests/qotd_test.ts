import {
  assert,
  assertEquals,
  assertGreaterOrEqual,
  assertLessOrEqual,
  assertMatch,
  assertThrows,
} from "@std/assert";
import {
  DEFAULT_QUOTATIONS,
  parseQuotations,
  quotationBytes,
  QuotationError,
} from "../servers/qotd.ts";
import { readAll, runScript, startServer } from "./_helpers.ts";
import { udpAsk } from "./_simple.ts";

const decoder = new TextDecoder();

Deno.test("parseQuotations() takes one quotation per paragraph, CRLF line ends, at most 512 bytes", () => {
  const quotations = parseQuotations(
    "First line\nsecond line\n\n  \nSecond.\r\n -- B\n\n",
  );
  assertEquals(quotations.map((q) => decoder.decode(q)), [
    "First line\r\nsecond line\r\n",
    "Second.\r\n -- B\r\n",
  ]);
  // 510 characters + CRLF = 512 bytes: allowed; one more is not.
  assertEquals(parseQuotations("x".repeat(510))[0].byteLength, 512);
  const tooLong = assertThrows(
    () => parseQuotations("ok\n\n" + "y".repeat(511)),
    QuotationError,
  );
  assertMatch(tooLong.message, /quotation 2 .* 513 bytes/);
  assertThrows(() => parseQuotations("\n \n"), QuotationError);
});

Deno.test("qotd.ts serves a built-in quotation over TCP and UDP, within 512 bytes", async () => {
  const known = DEFAULT_QUOTATIONS.map((q) =>
    decoder.decode(quotationBytes(q))
  );
  {
    await using server = await startServer("servers/qotd.ts", {
      permissions: ["--allow-net=127.0.0.1:0"],
      args: ["--hostname", "127.0.0.1", "--port", "0"],
    });
    using conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: server.port,
    });
    const bytes = await readAll(conn);
    assertLessOrEqual(bytes.byteLength, 512);
    assert(known.includes(decoder.decode(bytes)), decoder.decode(bytes));
  }
  await using server = await startServer("servers/qotd.ts", {
    permissions: ["--unstable-net", "--allow-net"],
    args: ["--udp", "--hostname", "127.0.0.1", "--port", "0"],
  });
  const reply = await udpAsk(server.port);
  assert(reply && reply.byteLength <= 512);
  assert(known.includes(decoder.decode(reply)));
});

Deno.test("qotd.ts --file serves only that file's quotations, with --allow-read for it alone", async () => {
  const path = await Deno.makeTempFile({ suffix: ".txt" });
  try {
    await Deno.writeTextFile(
      path,
      "Alpha.\n -- A\n\nBeta.\n\nGamma, the\nlast.\n",
    );
    await using server = await startServer("servers/qotd.ts", {
      permissions: ["--allow-net=127.0.0.1:0", `--allow-read=${path}`],
      args: ["--hostname", "127.0.0.1", "--port", "0", "--file", path],
    });
    const seen = new Set<string>();
    for (let i = 0; i < 30; i++) {
      using conn = await Deno.connect({
        hostname: "127.0.0.1",
        port: server.port,
      });
      seen.add(decoder.decode(await readAll(conn)));
    }
    const expected = [
      "Alpha.\r\n -- A\r\n",
      "Beta.\r\n",
      "Gamma, the\r\nlast.\r\n",
    ];
    for (const text of seen) {
      assert(expected.includes(text), JSON.stringify(text));
    }
    assertGreaterOrEqual(seen.size, 2, "picks among them");
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("qotd.ts refuses a quotation over 512 bytes and a missing file, exit 1, one line", async () => {
  const path = await Deno.makeTempFile({ suffix: ".txt" });
  try {
    await Deno.writeTextFile(path, "Short.\n\n" + "z".repeat(600) + "\n");
    const long = await runScript("servers/qotd.ts", {
      permissions: ["--allow-net=127.0.0.1:0", `--allow-read=${path}`],
      args: ["--hostname", "127.0.0.1", "--port", "0", "--file", path],
    });
    assertEquals(long.code, 1);
    assertMatch(
      long.stderr,
      /^error: .*: quotation 2 \("z+\.\.\."\) is 602 bytes with CRLF line ends; RFC 865 allows at most 512$/,
    );
    const missingFile = `${path}.missing`;
    const gone = await runScript("servers/qotd.ts", {
      permissions: ["--allow-net=127.0.0.1:0", `--allow-read=${missingFile}`],
      args: ["--hostname", "127.0.0.1", "--port", "0", "--file", missingFile],
    });
    assertEquals(gone.code, 1);
    assertEquals(
      gone.stderr,
      `error: cannot read quotation file '${missingFile}': no such file`,
    );
  } finally {
    await Deno.remove(path);
  }
});
