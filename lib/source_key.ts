/**
 * The source a per-client limit counts by, TCP's (`perSource`) and UDP's
 * (the reply rate, the forwarder's sessions) alike: one host, however many
 * ports or IPv6 addresses it uses.
 *
 * @module
 */

import { parseIPv6, unmapIPv4 } from "./address.ts";

/**
 * The source a limit counts by: an IPv4 address (an IPv4-mapped IPv6
 * address counts as the IPv4 address it carries), an IPv6 /64 (one host
 * has a whole /64 to pick addresses from, so a limit per IPv6 address
 * would be no limit), or a Unix socket path.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { sourceKey } from "./source_key.ts";
 *
 * const key = (hostname: string) => sourceKey({ transport: "udp", hostname, port: 5000 });
 * assertEquals(key("::ffff:192.0.2.1"), "192.0.2.1");
 * assertEquals(key("2001:db8:1:2::99"), "2001:db8:1:2::/64");
 * ```
 */
export function sourceKey(addr: Deno.Addr): string {
  if (!("hostname" in addr)) return "path" in addr ? addr.path : "";
  const host = unmapIPv4(addr.hostname);
  if (!host.includes(":")) return host;
  const groups = parseIPv6(host);
  if (!groups) return host;
  const prefix = Array.from(groups.subarray(0, 4), (g) => g.toString(16))
    .join(":").replace(/(^|:)0(:0)*$/, "");
  return `${prefix}::/64`;
}
