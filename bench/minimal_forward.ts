/**
 * The least a Deno forwarder can be, for `deno task bench`: accept, connect
 * to the target (the next of several in turn: round robin), then two
 * read/write loops over one buffer each, half-close on EOF, close both when
 * done. No limits, no logging, no errors handled beyond closing: the floor
 * that `servers/forward.ts` is measured against, with one target (the
 * forward family) or four (the balance family).
 *
 *     deno run --allow-net=127.0.0.1:8080,127.0.0.1:15000 bench/minimal_forward.ts 8080 15000
 *     deno run --allow-net=127.0.0.1 bench/minimal_forward.ts 8080 15000 15001 15002 15003
 *
 * @module
 */

const [listenPort, ...targetPorts] = Deno.args.map(Number);
const listener = Deno.listen({ hostname: "127.0.0.1", port: listenPort });
console.error(`listening on 127.0.0.1:${listener.addr.port}`);

async function pump(from: Deno.TcpConn, to: Deno.TcpConn): Promise<void> {
  const buffer = new Uint8Array(64 * 1024);
  try {
    for (let n; (n = await from.read(buffer)) !== null;) {
      let written = 0;
      while (written < n) {
        written += await to.write(buffer.subarray(written, n));
      }
    }
    await to.closeWrite();
  } catch {
    // Reset: the other loop ends when both are closed.
  }
}

let next = 0;

async function forward(client: Deno.TcpConn): Promise<void> {
  const port = targetPorts[next];
  next = (next + 1) % targetPorts.length;
  let target: Deno.TcpConn;
  try {
    target = await Deno.connect({ hostname: "127.0.0.1", port });
  } catch {
    client.close();
    return;
  }
  client.setNoDelay(true);
  target.setNoDelay(true);
  await Promise.all([pump(client, target), pump(target, client)]);
  client.close();
  target.close();
}

for await (const client of listener) forward(client);
