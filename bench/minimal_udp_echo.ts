/**
 * The least a Deno UDP echo server can do, for `deno task bench --family
 * udp`: what the runtime allows, so a gap between ours and C can be split
 * into the runtime's part and ours. One `Deno.listenDatagram` socket, one
 * reused 64 KiB buffer, each datagram sent back to its sender; no guards,
 * no logging, no timers.
 *
 *     deno run --unstable-net --allow-net=127.0.0.1 bench/minimal_udp_echo.ts PORT
 *
 * @module
 */

const socket = Deno.listenDatagram({
  transport: "udp",
  hostname: "127.0.0.1",
  port: Number(Deno.args[0]),
});
console.error(`listening on 127.0.0.1:${(socket.addr as Deno.NetAddr).port}`);
const buffer = new Uint8Array(64 * 1024);
while (true) {
  const [data, from] = await socket.receive(buffer);
  await socket.send(data, from);
}
