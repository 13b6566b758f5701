/**
 * The least a Deno forwarder can be, for `deno task bench`: accept, connect
 * to the target, then two read/write loops over one buffer each, half-close
 * on EOF, close both when done. No limits, no logging, no errors handled
 * beyond closing: the floor that `servers/forward.ts` is measured against.
 *
 *     deno run --allow-net=127.0.0.1:8080,127.0.0.1:15000 bench/minimal_forward.ts 8080 15000
 *
 * @module
 */

const [listenPort, targetPort] = Deno.args.map(Number);
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

async function forward(client: Deno.TcpConn): Promise<void> {
  let target: Deno.TcpConn;
  try {
    target = await Deno.connect({ hostname: "127.0.0.1", port: targetPort });
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
