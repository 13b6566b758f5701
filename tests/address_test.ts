import { assertEquals, assertThrows } from "@std/assert";
import {
  AddressError,
  checkHost,
  parseIPv4,
  parseIPv6,
  unmapIPv4,
} from "../mod.ts";

Deno.test("parseIPv4() takes dotted quads only, as inet_pton does", () => {
  assertEquals([...parseIPv4("0.0.0.0")!], [0, 0, 0, 0]);
  assertEquals([...parseIPv4("255.255.255.255")!], [255, 255, 255, 255]);
  for (
    const bad of [
      "1.2.3",
      "1.2.3.4.5",
      "256.0.0.1",
      "01.2.3.4",
      "1.2.3.",
      "a.b.c.d",
      "",
    ]
  ) {
    assertEquals(parseIPv4(bad), null, bad);
  }
});

Deno.test("parseIPv6() reads every spelling and refuses malformed ones", () => {
  assertEquals([...parseIPv6("::")!], [0, 0, 0, 0, 0, 0, 0, 0]);
  assertEquals([...parseIPv6("::1")!], [0, 0, 0, 0, 0, 0, 0, 1]);
  assertEquals([...parseIPv6("1::")!], [1, 0, 0, 0, 0, 0, 0, 0]);
  assertEquals(
    [...parseIPv6("2001:DB8:0:0:0:0:0:1")!],
    [0x2001, 0xdb8, 0, 0, 0, 0, 0, 1],
  );
  assertEquals(
    [...parseIPv6("::ffff:192.0.2.1")!],
    [0, 0, 0, 0, 0, 0xffff, 0xc000, 0x0201],
  );
  for (
    const bad of [
      "1::2::3",
      ":::",
      "1:2:3:4:5:6:7",
      "1:2:3:4:5:6:7:8:9",
      "1:2:3:4:5:6:7::8",
      "12345::",
      "::g",
      "1.2.3.4::",
      "::1.2.3",
      "",
    ]
  ) {
    assertEquals(parseIPv6(bad), null, bad);
  }
});

Deno.test("checkHost() tells IPv4, IPv6 and names apart and refuses the rest", () => {
  assertEquals(checkHost("192.0.2.1"), 4);
  assertEquals(checkHost("2001:db8::1"), 6);
  assertEquals(checkHost("[2001:db8::1]"), 6);
  assertEquals(checkHost("example.org"), "name");
  assertEquals(checkHost("example.org."), "name");
  assertEquals(checkHost("my_host-1"), "name");
  for (
    const bad of [
      "1.2.3",
      "[192.0.2.1]",
      "-x.org",
      "a..b",
      "a b",
      "",
      "x".repeat(64),
      "[::1",
    ]
  ) {
    assertThrows(
      () => checkHost(bad),
      AddressError,
      undefined,
      `accepted '${bad}'`,
    );
  }
});

Deno.test("unmapIPv4() prints IPv4-mapped IPv6 addresses dotted", () => {
  assertEquals(unmapIPv4("::ffff:127.0.0.1"), "127.0.0.1");
  assertEquals(unmapIPv4("::FFFF:7f00:1"), "127.0.0.1");
  assertEquals(unmapIPv4("0:0:0:0:0:ffff:c000:201"), "192.0.2.1");
  assertEquals(unmapIPv4("::1"), "::1");
  assertEquals(unmapIPv4("::ffff:1:127.0.0.1"), "::ffff:1:127.0.0.1");
  assertEquals(unmapIPv4("64:ff9b::192.0.2.1"), "64:ff9b::192.0.2.1");
  assertEquals(unmapIPv4("10.0.0.1"), "10.0.0.1");
});
