/**
 * The bench's floor for `servers/exec.ts`: the least a Deno program can do
 * to run a program per connection (accept, `Deno.Command`, pipe both
 * ways, close), with none of exec.ts's care: no limits, no environment, no
 * signals, no stderr handling, no half-close.
 *
 *     deno run --allow-net=127.0.0.1:9000 --allow-run=/usr/bin/printf \
 *       bench/exec_loop.ts 9000 /usr/bin/printf 'hello\r\n'
 *
 * @module
 */

const [port, program, ...args] = Deno.args;
const listener = Deno.listen({ hostname: "127.0.0.1", port: Number(port) });
console.error(`listening on 127.0.0.1:${port}`);

async function handle(conn: Deno.Conn): Promise<void> {
  const child = new Deno.Command(program, {
    args,
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  conn.readable.pipeTo(child.stdin).catch(() => {});
  await child.stdout.pipeTo(conn.writable).catch(() => {});
  await child.status;
  try {
    conn.close();
  } catch {
    // Closed by pipeTo.
  }
}

for await (const conn of listener) handle(conn);
