/**
 * Forged UDP datagrams for the loop tests: a datagram "from" a port some
 * other socket owns (a server's), sent through a raw socket by python3, as
 * an attacker would to start a loop between two servers. Needs root.
 *
 * @module
 */

import { hasCommand, runCommand } from "./_helpers.ts";

const SCRIPT = `
import socket, struct, sys
src, dst, payload = int(sys.argv[1]), int(sys.argv[2]), bytes.fromhex(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
udp = struct.pack("!HHHH", src, dst, 8 + len(payload), 0) + payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                 socket.inet_aton("127.0.0.1"), socket.inet_aton("127.0.0.1"))
s.sendto(ip + udp, ("127.0.0.1", 0))
`;

/** Sends `payload` to 127.0.0.1:`to` as if from 127.0.0.1:`from`. */
export async function forgeUdp(
  from: number,
  to: number,
  payload: Uint8Array,
): Promise<void> {
  const hex = Array.from(payload, (b) => b.toString(16).padStart(2, "0"))
    .join("");
  const { code, stderr } = await runCommand("python3", [
    "-c",
    SCRIPT,
    String(from),
    String(to),
    hex,
  ]);
  if (code !== 0) throw new Error(`python3 failed: ${stderr}`);
}

/**
 * For `Deno.test({ ignore })`: `true` (skip, saying why) where datagrams
 * cannot be forged (not root, or no python3).
 */
export function cannotForge(): boolean {
  if (Deno.uid() === 0 && hasCommand("python3")) return false;
  console.error("SKIP: forging a datagram needs root and python3");
  return true;
}
