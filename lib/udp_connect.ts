/**
 * Connecting a UDP socket to its one peer, which Deno's API cannot do
 * (`Deno.listenDatagram` sockets stay unconnected): `connect(2)` on the
 * socket's descriptor, through libc (`libc.ts`; FFI access to libc, as
 * passing resets on takes). The kernel tells a connected UDP socket when
 * its peer answers ICMP port unreachable, and an unconnected one never
 * (Linux reports such errors to connected sockets only, without
 * `IP_RECVERR`): the socket's next send then fails with
 * `Deno.errors.ConnectionRefused`. (Its receive is not woken by it: Deno
 * waits for a datagram, not for an error.) A connected socket also takes
 * datagrams from that peer only.
 *
 * @module
 */

import { parseIPv4, parseIPv6, unmapIPv4 } from "./address.ts";
import { DescriptorListError, openDescriptors } from "./descriptors.ts";
import { type LibC, openLibc } from "./libc.ts";

const AF_INET = 2;
const AF_INET6 = 10;
const SOL_SOCKET = 1;
const SO_TYPE = 3;
const SOCK_DGRAM = 2;

/**
 * Whether {@linkcode connectDatagram} can work here: Linux, and FFI access
 * to libc granted (asked without a prompt).
 *
 * @example
 * ```ts
 * import { canConnectDatagram } from "./udp_connect.ts";
 *
 * if (typeof canConnectDatagram() !== "boolean") throw new Error();
 * ```
 */
export function canConnectDatagram(): boolean {
  try {
    openLibc("connecting a UDP socket");
    return true;
  } catch {
    return false;
  }
}

/** `struct sockaddr_in` or `sockaddr_in6` for `addr`, `null` for a name. */
function socketAddress(addr: Deno.NetAddr): Uint8Array | null {
  const host = unmapIPv4(addr.hostname);
  const v4 = parseIPv4(host);
  if (v4) {
    // family (host-endian: little on x86_64 and arm64), port (big-endian),
    // 4 address bytes, 8 of padding.
    const out = new Uint8Array(16);
    out[0] = AF_INET;
    out[2] = addr.port >> 8;
    out[3] = addr.port & 0xff;
    out.set(v4, 4);
    return out;
  }
  const v6 = parseIPv6(host.replace(/^\[|\]$/g, "").replace(/%.*$/, ""));
  if (!v6) return null;
  // family, port, flow info (4), 16 address bytes, scope id (4).
  const out = new Uint8Array(28);
  out[0] = AF_INET6;
  out[2] = addr.port >> 8;
  out[3] = addr.port & 0xff;
  v6.forEach((group, i) => {
    out[8 + 2 * i] = group >> 8;
    out[9 + 2 * i] = group & 0xff;
  });
  return out;
}

/**
 * The descriptor of the unconnected UDP socket bound to `local`'s port
 * in `family`: the one whose type is datagram, whose local port and family
 * are these, and which has no peer yet. `-1` when there is none.
 */
function datagramDescriptor(c: LibC, family: number, port: number): number {
  const address = new Uint8Array(128);
  const length = new Uint32Array(1);
  const type = new Int32Array(1);
  const typeLength = new Uint32Array(1);
  const matches = (fd: number): boolean => {
    length[0] = address.byteLength;
    if (c.getsockname(fd, address, length) !== 0) return false;
    if ((address[0] | (address[1] << 8)) !== family) return false;
    if (((address[2] << 8) | address[3]) !== port) return false;
    typeLength[0] = 4;
    const typeRead = c.getsockopt(
      fd,
      SOL_SOCKET,
      SO_TYPE,
      new Uint8Array(type.buffer),
      new Uint8Array(typeLength.buffer),
    );
    if (typeRead !== 0 || type[0] !== SOCK_DGRAM) return false;
    length[0] = address.byteLength;
    return c.getpeername(fd, address, length) !== 0; // not connected yet
  };
  // As keepalive.ts's search: a new socket often takes the descriptor
  // after the last one found, so that one is tried before them all.
  if (lastFound >= 0 && matches(lastFound + 1)) return ++lastFound;
  for (const fd of openDescriptors(c)) {
    if (matches(fd)) return lastFound = fd;
  }
  return -1;
}

/** Where the last search found a socket: the next is often after it. */
let lastFound = -1;

/**
 * Connects `socket` (a UDP socket of `Deno.listenDatagram`, bound to an
 * unspecified address, `0.0.0.0` or `::`) to `peer` (an IP address, of
 * the socket's family): from then on a port unreachable from `peer` fails
 * the socket's next send with `ConnectionRefused`, and only `peer`'s
 * datagrams are received (sends to `peer` go on as before). Returns
 * `false`, changing nothing, when it cannot: no FFI access to libc, not
 * Linux, the socket not found, `peer` not an address of its family.
 *
 * @example A peer with nothing listening refuses the next send
 * ```ts
 * import { assertRejects } from "@std/assert";
 * import { canConnectDatagram, connectDatagram } from "./udp_connect.ts";
 *
 * const closed = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
 * const peer = closed.addr as Deno.NetAddr;
 * closed.close();
 * const socket = Deno.listenDatagram({ transport: "udp", hostname: "0.0.0.0", port: 0 });
 * if (connectDatagram(socket, peer)) {
 *   const probe = new Uint8Array([1]);
 *   await socket.send(probe, peer);
 *   await assertRejects(async () => {
 *     // The port unreachable comes back at once over loopback.
 *     for (let i = 0; i < 100; i++) {
 *       await socket.send(probe, peer);
 *       await new Promise((resolve) => setTimeout(resolve, 10));
 *     }
 *   }, Deno.errors.ConnectionRefused);
 * } else if (canConnectDatagram()) {
 *   throw new Error("not connected");
 * }
 * socket.close();
 * ```
 */
export function connectDatagram(
  socket: Deno.DatagramConn,
  peer: Deno.NetAddr,
): boolean {
  const local = socket.addr;
  if (local.transport !== "udp") return false;
  const address = socketAddress(peer);
  if (!address) return false;
  const family = address[0];
  const localFamily = local.hostname.includes(":") ? AF_INET6 : AF_INET;
  if (family !== localFamily) return false;
  let c: LibC;
  try {
    c = openLibc("connecting a UDP socket");
  } catch {
    return false;
  }
  let fd: number;
  try {
    fd = datagramDescriptor(c, family, local.port);
  } catch (error) {
    if (error instanceof DescriptorListError) return false;
    throw error;
  }
  return fd >= 0 && c.connect(fd, address, address.byteLength) === 0;
}
