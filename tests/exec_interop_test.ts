/**
 * Conformance of servers/exec.ts with the super-servers it replaces: the
 * same programs under tcpserver (ucspi-tcp), xinetd, `ncat -l -k -e`,
 * `socat TCP-LISTEN:P,fork EXEC:` and ours give the same bytes to the same
 * clients; the environment ours sets matches tcpserver's. A missing peer
 * is skipped with a printed reason.
 */
import { assertEquals, assertLessOrEqual, assertMatch } from "@std/assert";
import { readExact, writeAll } from "../mod.ts";
import {
  assertSameBytes,
  freePort,
  hasCommand,
  missing,
  pseudoRandomBytes,
  readAll,
  spawn,
} from "./_helpers.ts";
import { exchange, program, startExec } from "./_exec.ts";

const decode = (b: Uint8Array) => new TextDecoder().decode(b);

/** A super-server running one program. */
interface Peer extends AsyncDisposable {
  name: string;
  port: number;
}

type Start = (command: string[], port: number) => Promise<Peer>;

/** A peer command: wait for its ready line, stop it with SIGTERM. */
async function startCommand(
  name: string,
  port: number,
  command: string,
  args: string[],
  ready: RegExp,
): Promise<Peer> {
  const proc = spawn(command, { args });
  try {
    await proc.waitForStderr(ready);
  } catch (error) {
    await proc[Symbol.asyncDispose]();
    throw error;
  }
  return { name, port, [Symbol.asyncDispose]: () => proc.terminate(5000) };
}

/** Waits until something accepts on 127.0.0.1:`port`. */
async function accepting(port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    try {
      using conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await conn.closeWrite();
      await readAll(conn);
      return;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

const PEERS: Record<string, { requires: string[]; start: Start }> = {
  tcpserver: {
    requires: ["tcpserver"],
    // -H -R: no name lookups; -l 0: no local one either (ours does none).
    start: (command, port) =>
      startCommand("tcpserver", port, "tcpserver", [
        "-v",
        "-c",
        "64",
        "-H",
        "-R",
        "-l",
        "0",
        "127.0.0.1",
        String(port),
        ...command,
      ], /status: 0\/64/),
  },
  xinetd: {
    requires: ["xinetd"],
    start: async (command, port) => {
      const dir = await Deno.makeTempDir({ prefix: "sockets-exec-xinetd-" });
      const attributes = [
        "type = UNLISTED",
        "id = exectest",
        "socket_type = stream",
        "protocol = tcp",
        `port = ${port}`,
        "bind = 127.0.0.1",
        "wait = no",
        "user = root",
        `server = ${command[0]}`,
        // An empty server_args disables the service.
        ...(command.length > 1
          ? [`server_args = ${command.slice(1).join(" ")}`]
          : []),
        "instances = 64",
        "cps = 10000 1",
      ];
      await Deno.writeTextFile(
        `${dir}/xinetd.conf`,
        `defaults\n{\n}\nservice exectest\n{\n${
          attributes.map((line) => `  ${line}\n`).join("")
        }}\n`,
      );
      const proc = spawn("xinetd", {
        args: [
          "-dontfork",
          "-f",
          `${dir}/xinetd.conf`,
          "-pidfile",
          `${dir}/xinetd.pid`,
          "-filelog",
          `${dir}/xinetd.log`,
        ],
      });
      const stopAll = async () => {
        await proc.terminate(5000);
        await Deno.remove(dir, { recursive: true });
      };
      try {
        await accepting(port);
      } catch (error) {
        await stopAll();
        throw error;
      }
      return { name: "xinetd", port, [Symbol.asyncDispose]: stopAll };
    },
  },
  ncat: {
    requires: ["ncat"],
    start: (command, port) =>
      startCommand("ncat", port, "ncat", [
        "-v",
        "-l",
        "-k",
        "-m",
        "64",
        "127.0.0.1",
        String(port),
        "-e",
        command.join(" "),
      ], /Listening on/),
  },
  socat: {
    requires: ["socat"],
    start: (command, port) =>
      startCommand("socat", port, "socat", [
        "-d",
        "-d",
        `TCP-LISTEN:${port},bind=127.0.0.1,fork,reuseaddr`,
        `EXEC:${command.join(" ")}`,
      ], /listening on/),
  },
};

/** The peers installed here; prints why each missing one is skipped. */
function availablePeers(): [string, Start][] {
  const found: [string, Start][] = [];
  for (const [name, { requires, start }] of Object.entries(PEERS)) {
    const absent = requires.filter((c) => !hasCommand(c));
    if (absent.length > 0) {
      console.error(`SKIP ${name}: ${absent.join(", ")} not installed`);
    } else if (name === "xinetd" && Deno.uid() !== 0) {
      console.error("SKIP xinetd: needs root (user = root)");
    } else {
      found.push([name, start]);
    }
  }
  return found;
}

/**
 * Runs `command` under ours and under every peer installed; `check` gets
 * each one's port (ours first) and its name. Returns the names tried.
 */
async function underEach(
  command: string[],
  check: (port: number, name: string) => Promise<void>,
): Promise<string[]> {
  const tried = ["ours"];
  const checked = async (port: number, name: string) => {
    try {
      await check(port, name);
    } catch (error) {
      throw new Error(`under ${name}: ${(error as Error).message}`, {
        cause: error,
      });
    }
  };
  {
    await using ours = await startExec(command, ["--rate", "0"]);
    await checked(ours.port, "ours");
  }
  for (const [name, start] of availablePeers()) {
    await using peer = await start(command, freePort());
    await checked(peer.port, name);
    tried.push(name);
  }
  return tried;
}

/** The absolute path of `name` on PATH (peers such as ncat need one). */
function which(name: string): string {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      if (Deno.statSync(`${dir}/${name}`).isFile) return `${dir}/${name}`;
    } catch {
      // Not here.
    }
  }
  throw new Error(`${name} not on PATH`);
}

Deno.test("cat: 1 MB with half-close comes back byte-exact from ours and every super-server (ncat: without half-close)", async () => {
  const data = pseudoRandomBytes(1 << 20, 41);
  const tried = await underEach([which("cat")], async (port, name) => {
    if (name !== "ncat") {
      assertSameBytes(await exchange(port, data), data, `cat under ${name}`);
      return;
    }
    // ncat -e ends the connection at the client's EOF, dropping what the
    // program still owes (ncat 7.93: 57344 of 1 MB came back here), and
    // its relay stalls when both directions are full at once; so it gets
    // the megabyte 64 KiB at a time, each chunk back before the next.
    using conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const chunk = 64 * 1024;
    for (let offset = 0; offset < data.byteLength; offset += chunk) {
      const piece = data.subarray(offset, offset + chunk);
      const reading = readExact(conn, piece.byteLength);
      await writeAll(conn, piece);
      assertSameBytes(await reading, piece, `cat under ncat at ${offset}`);
    }
  });
  console.error(`cat compared: ${tried.join(", ")}`);
});

Deno.test("date -u: the same format and length from ours and every super-server, the same time within 2 s", async () => {
  const outputs = new Map<string, string>();
  await underEach([which("date"), "-u"], async (port, name) => {
    // No EOF from the client (ncat -e would drop the answer): the end
    // comes from the program.
    outputs.set(name, decode(await exchange(port, null, { halfClose: false })));
  });
  console.error(`date compared: ${[...outputs.keys()].join(", ")}`);
  const mine = outputs.get("ours")!;
  assertMatch(
    mine,
    /^[A-Z][a-z]{2} [A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d UTC \d{4}\n$/,
  );
  for (const [name, text] of outputs) {
    assertEquals(text.length, mine.length, `${name}: ${JSON.stringify(text)}`);
    assertEquals(text.replace(/\d/g, "0"), mine.replace(/\d/g, "0"), name);
    const at = Date.parse(text.replace(" UTC", "") + " UTC");
    assertLessOrEqual(
      Math.abs(at - Date.parse(mine.replace(" UTC", "") + " UTC")),
      2000,
      name,
    );
  }
});

Deno.test("a program that reads a line and answers: the same answer from ours and every super-server", async () => {
  const tried = await underEach([program("answer.sh")], async (port, name) => {
    // Without EOF from the client: the answer and the end come from the program.
    assertEquals(
      decode(await exchange(port, "world\n", { halfClose: false })),
      "hello, world\n",
      name,
    );
  });
  console.error(`answer compared: ${tried.join(", ")}`);
});

Deno.test({
  name:
    "env: ours sets tcpserver's TCP variables, the same names and values (modulo ports)",
  ignore: missing("tcpserver"),
  async fn() {
    const env = which("env");
    const variables = async (port: number) => {
      using conn = await Deno.connect({ hostname: "127.0.0.1", port });
      const clientPort = String((conn.localAddr as Deno.NetAddr).port);
      await conn.closeWrite();
      const lines = decode(await readAll(conn)).split("\n").filter((l) =>
        /^(PROTO|TCP)/.test(l)
      );
      // Each server's port and the client's differ from run to run.
      return lines.map((l) =>
        l.replace(`=${port}`, "=SERVER_PORT").replace(
          `=${clientPort}`,
          "=CLIENT_PORT",
        )
      ).sort();
    };
    let mine: string[];
    {
      await using ours = await startExec([env], ["--clear-env"]);
      mine = await variables(ours.port);
    }
    const port = freePort();
    // An empty environment, as --clear-env gives ours.
    await using _theirs = await startCommand("tcpserver", port, "env", [
      "-i",
      which("tcpserver"),
      "-v",
      "-H",
      "-R",
      "-l",
      "0",
      "127.0.0.1",
      String(port),
      env,
    ], /status: 0\/40/);
    // -l 0 sets TCPLOCALHOST=0; with no -l it would be a DNS lookup. Ours
    // does no lookups and sets none.
    const theirs = (await variables(port)).filter((l) =>
      !l.startsWith("TCPLOCALHOST=")
    );
    assertEquals(mine, theirs);
    assertEquals(mine, [
      "PROTO=TCP",
      "TCPLOCALIP=127.0.0.1",
      "TCPLOCALPORT=SERVER_PORT",
      "TCPREMOTEIP=127.0.0.1",
      "TCPREMOTEPORT=CLIENT_PORT",
    ]);
  },
});
