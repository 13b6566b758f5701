/**
 * Stand-in for `servers/daytime.ts` until that script lands: the daytime
 * service (RFC 867) on the shared life cycle (`serve` from `mod.ts`), so the
 * connect scenario measures what our servers share. `bench/bench.ts` uses
 * `servers/daytime.ts` as soon as it exists.
 *
 *     deno run --allow-net=127.0.0.1:1313 bench/daytime_standin.ts --port 1313
 *
 * @module
 */

import {
  parseCommandLine,
  runMain,
  runServers,
  serve,
  SERVER_FLAGS,
  serverFlagsHelp,
  serverOptionsFromFlags,
  writeAll,
} from "../mod.ts";

const encoder = new TextEncoder();

function daytimeLine(date: Date): string {
  // C ctime: "Tue Nov 24 23:37:45 2026", day of month space-padded.
  const text = date.toString(); // "Tue Nov 24 2026 23:37:45 GMT+0000 (...)"
  const [day, month, dom, year, time] = text.split(" ");
  return `${day} ${month} ${dom.padStart(2, " ")} ${time} ${year}\r\n`;
}

if (import.meta.main) {
  await runMain(async () => {
    const { values } = parseCommandLine(Deno.args, {
      usage: `usage: daytime_standin.ts [options]\n${serverFlagsHelp(13)}`,
      options: { ...SERVER_FLAGS },
    });
    await runServers([{
      server: serve({
        name: "daytime",
        defaultPort: 13,
        async stream(conn, context) {
          const line = encoder.encode(daytimeLine(new Date()));
          await writeAll(conn, line);
          context.bytesOut += line.byteLength;
        },
      }, serverOptionsFromFlags(values)),
    }]);
  });
}
