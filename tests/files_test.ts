/**
 * Every file the toolkit reads (certificate, key, CA, quotations) is a
 * regular file of at most 1 MiB, checked before it is opened, and checked
 * for what it must hold at start; every refusal is one `error:` line, exit
 * 1, with the file's name (and text) printed without control bytes.
 */
import {
  assertEquals,
  assertInstanceOf,
  assertMatch,
  assertNotMatch,
  assertThrows,
} from "@std/assert";
import {
  FileReadError,
  MAX_SMALL_FILE_BYTES,
  readCaFile,
  readSmallFile,
  readTlsFiles,
  TlsFileError,
} from "../mod.ts";
import {
  makeCertificates,
  missing,
  runCommand,
  runScript,
  spawn,
  startTlsEcho,
} from "./_helpers.ts";

const noOpenssl = missing("openssl");

/** A FIFO in a fresh directory (removed after `fn`). */
async function withFifo(fn: (fifo: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sockets-fifo-" });
  const fifo = `${dir}/fifo`;
  const { code, stderr } = await runCommand("mkfifo", [fifo]);
  if (code !== 0) throw new Error(`mkfifo failed: ${stderr}`);
  try {
    await fn(fifo);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * Runs `script`, killed after 20 s or past 300 MB of memory: a hang or a
 * read without end fails the test instead of stalling or exhausting the
 * machine.
 */
async function runWithin(
  script: string,
  permissions: string[],
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const began = performance.now();
  await using proc = spawn(script, { permissions, args });
  const watchdog = setInterval(() => {
    let rssKb = 0;
    try {
      const status = Deno.readTextFileSync(`/proc/${proc.child.pid}/status`);
      rssKb = Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? 0);
    } catch {
      // Exited, or no /proc: the time limit still holds.
    }
    if (rssKb > 300_000 || performance.now() - began > 20_000) {
      proc.kill("SIGKILL");
    }
  }, 50);
  try {
    return await proc.finished();
  } finally {
    clearInterval(watchdog);
  }
}

/** The one stderr line of a run. */
function oneLine(stderr: string): string {
  const lines = stderr.trimEnd().split("\n");
  assertEquals(lines.length, 1, stderr);
  return lines[0];
}

Deno.test("readSmallFile() refuses a device, a FIFO, a directory and a file over the limit before reading", async () => {
  const reasons = (path: string, maxBytes?: number) => {
    const error = assertThrows(
      () => readSmallFile(path, "test file", { maxBytes }),
      FileReadError,
    );
    return [error.reason, error.message];
  };
  assertEquals(reasons("/dev/zero"), [
    "not-regular",
    "cannot read test file '/dev/zero': a character device, not a regular file",
  ]);
  assertEquals(reasons("/tmp")[0], "not-regular");
  await withFifo((fifo) => {
    assertEquals(reasons(fifo), [
      "not-regular",
      `cannot read test file '${fifo}': a FIFO, not a regular file`,
    ]);
    return Promise.resolve();
  });
  const path = await Deno.makeTempFile();
  try {
    await Deno.writeFile(path, new Uint8Array(11));
    assertEquals(reasons(path, 10), [
      "too-large",
      `cannot read test file '${path}': larger than 10 bytes, the most accepted`,
    ]);
    assertEquals(readSmallFile(path, "test file", { maxBytes: 11 }).length, 11);
    assertEquals(MAX_SMALL_FILE_BYTES, 1024 * 1024);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("echo.ts --tls --cert /dev/zero is one error line at once, not a process that grows until killed", async () => {
  const run = await runWithin("servers/echo.ts", [
    "--allow-net=127.0.0.1:0",
    "--allow-read=/dev/zero",
  ], [
    "--hostname",
    "127.0.0.1",
    "--port",
    "0",
    "--tls",
    "--cert",
    "/dev/zero",
    "--key",
    "/dev/zero",
  ]);
  assertEquals(run.code, 1, run.stderr);
  assertEquals(
    oneLine(run.stderr),
    "error: cannot read certificate file '/dev/zero': a character device, not a regular file",
  );
});

Deno.test("qotd.ts --file FIFO is refused at once instead of hanging; a file over 1 MiB too", async () => {
  await withFifo(async (fifo) => {
    const run = await runWithin("servers/qotd.ts", [
      "--allow-net=127.0.0.1:0",
      `--allow-read=${fifo}`,
    ], ["--hostname", "127.0.0.1", "--port", "0", "--file", fifo]);
    assertEquals(run.code, 1, run.stderr);
    assertEquals(
      oneLine(run.stderr),
      `error: cannot read quotation file '${fifo}': a FIFO, not a regular file`,
    );
  });
  const big = await Deno.makeTempFile({ suffix: ".txt" });
  try {
    await Deno.writeTextFile(big, "Quote.\n\n".repeat(150_000)); // 1.2 MB
    const run = await runWithin("servers/qotd.ts", [
      "--allow-net=127.0.0.1:0",
      `--allow-read=${big}`,
    ], ["--hostname", "127.0.0.1", "--port", "0", "--file", big]);
    assertEquals(run.code, 1, run.stderr);
    assertEquals(
      oneLine(run.stderr),
      `error: cannot read quotation file '${big}': larger than 1 MiB, the most accepted`,
    );
  } finally {
    await Deno.remove(big);
  }
});

Deno.test("qotd.ts: control bytes of the quotation file are escaped in the error line, not sent to the terminal", async () => {
  const path = await Deno.makeTempFile({ suffix: ".txt" });
  try {
    await Deno.writeTextFile(
      path,
      "Fine.\n\n\x1b[31mred\x1b]0;title\x07" + "z".repeat(600) + "\n",
    );
    const run = await runScript("servers/qotd.ts", {
      permissions: ["--allow-net=127.0.0.1:0", `--allow-read=${path}`],
      args: ["--hostname", "127.0.0.1", "--port", "0", "--file", path],
    });
    assertEquals(run.code, 1, run.stderr);
    const line = oneLine(run.stderr);
    // No byte a terminal would act on reached stderr.
    // deno-lint-ignore no-control-regex
    assertNotMatch(line, /[\x00-\x1f\x7f]/);
    assertEquals(
      line,
      `error: ${path}: quotation 2 ("\\x1b[31mred\\x1b]0;title\\x07zzzzzzzzzzzz...") is 620 bytes with CRLF line ends; RFC 865 allows at most 512`,
    );
  } finally {
    await Deno.remove(path);
  }
});

Deno.test({
  name:
    "echo.ts --tls with a key that is not the certificate's says so at start, exit 1",
  ignore: noOpenssl,
  async fn() {
    await using certs = await makeCertificates();
    const wrongKey = `${certs.dir}/wrong-ca.key`;
    const run = await runScript("servers/echo.ts", {
      permissions: [
        "--allow-net=127.0.0.1:0",
        `--allow-read=${certs.cert},${wrongKey}`,
      ],
      args: [
        "--hostname",
        "127.0.0.1",
        "--port",
        "0",
        "--tls",
        "--cert",
        certs.cert,
        "--key",
        wrongKey,
      ],
    });
    assertEquals(run.code, 1, run.stderr);
    const line = oneLine(run.stderr);
    assertEquals(
      line,
      `error: certificate and key do not match: the key in '${wrongKey}' is not the one '${certs.cert}' was made for; give the key of that certificate`,
    );
    assertNotMatch(line, /unsupported protocol/);
    assertInstanceOf(
      assertThrows(() => readTlsFiles(certs.cert, wrongKey)),
      TlsFileError,
    );
  },
});

Deno.test({
  name:
    "connect.ts --tls --ca with a damaged certificate fails at start, before connecting",
  ignore: noOpenssl,
  async fn() {
    await using certs = await makeCertificates();
    const damaged = `${certs.dir}/damaged.pem`;
    const ca = await Deno.readTextFile(certs.ca);
    // Still PEM, but the DER's first bytes are not an X.509 SEQUENCE.
    const lines = ca.split("\n");
    lines[1] = "AAAA" + lines[1].slice(4);
    await Deno.writeTextFile(damaged, lines.join("\n"));
    // Nothing listens there: today the error would be "refused".
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = listener.addr.port;
    listener.close();
    const run = await runScript("clients/connect.ts", {
      permissions: [`--allow-net=127.0.0.1:${port}`, `--allow-read=${damaged}`],
      args: ["--tls", "--ca", damaged, "127.0.0.1", String(port)],
    });
    assertEquals(run.code, 1, run.stderr);
    assertEquals(
      oneLine(run.stderr),
      `error: certificate file '${damaged}' is damaged: its certificate does not parse as X.509; give the certificate as PEM, as openssl writes it`,
    );
    assertInstanceOf(assertThrows(() => readCaFile(damaged)), TlsFileError);
    assertEquals(readCaFile(certs.ca), ca);
  },
});

Deno.test({
  name:
    "connect.ts --tls with the wrong CA: one plain line with the fix, no Rust debug text",
  ignore: noOpenssl,
  async fn() {
    await using certs = await makeCertificates();
    await using server = await startTlsEcho(certs);
    const run = await runScript("clients/connect.ts", {
      permissions: [
        `--allow-net=127.0.0.1:${server.port}`,
        `--allow-read=${certs.wrongCa}`,
      ],
      args: ["--tls", "--ca", certs.wrongCa, "127.0.0.1", String(server.port)],
      input: "secret\n",
    });
    assertEquals(run.code, 1, run.stderr);
    const errors = run.stderr.split("\n").filter((l) => l.startsWith("error:"));
    assertEquals(errors, [
      `error: TLS handshake with 127.0.0.1:${server.port} failed: certificate not trusted (unknown issuer): give --ca FILE with the CA that signed it, or --insecure to skip the check`,
    ]);
    assertNotMatch(run.stderr, /UnknownIssuer|\w+\(\w+\(/);
    // A CA certificate presented as the server's own: no `Other(OtherError(...))`.
    await using selfSigned = await startTlsEcho({
      cert: certs.ca,
      key: `${certs.dir}/ca.key`,
    });
    const own = await runScript("clients/connect.ts", {
      permissions: [
        `--allow-net=127.0.0.1:${selfSigned.port}`,
        `--allow-read=${certs.ca}`,
      ],
      args: ["--tls", "--ca", certs.ca, "127.0.0.1", String(selfSigned.port)],
      input: "secret\n",
    });
    assertEquals(own.code, 1, own.stderr);
    assertMatch(
      own.stderr,
      /^error: TLS handshake with [^\n]* failed: the server presented a CA certificate as its own: it needs a server certificate signed by that CA$/m,
    );
    assertNotMatch(own.stderr, /OtherError|CaUsedAsEndEntity/);
  },
});
