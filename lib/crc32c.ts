/**
 * CRC32C (Castagnoli, RFC 3720 appendix B.4; RFC 4960 appendix B): the
 * checksum a PROXY protocol v2 header may carry (`PP2_TYPE_CRC32C`). A
 * table of 256 entries, a byte at a time: a header is at most a few
 * hundred bytes, checked once per connection. (`@std/crypto` computes it
 * through WebAssembly, a dependency too large for one table.)
 *
 * @module
 */

/** The reflected Castagnoli polynomial 0x1EDC6F41. */
const POLYNOMIAL = 0x82f63b78;

const TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLYNOMIAL : c >>> 1;
    table[n] = c;
  }
  return table;
})();

/**
 * The CRC32C of `bytes`, an unsigned 32-bit number.
 *
 * @example The check value of RFC 3720's CRC32C
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { crc32c } from "./crc32c.ts";
 *
 * assertEquals(crc32c(new TextEncoder().encode("123456789")), 0xe3069283);
 * ```
 */
export function crc32c(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (let i = 0; i < bytes.byteLength; i++) {
    crc = TABLE[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  }
  return (crc ^ 0xffffffff) >>> 0;
}
