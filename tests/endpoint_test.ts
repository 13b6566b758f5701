import { assertEquals, assertThrows } from "@std/assert";
import {
  EndpointError,
  formatAddr,
  formatEndpoint,
  joinHostPort,
  parseEndpoint,
  parsePort,
  splitHostPort,
} from "../mod.ts";

Deno.test("parseEndpoint() reads every transport, IPv6 in brackets", () => {
  assertEquals(parseEndpoint("tcp://127.0.0.1:7"), {
    transport: "tcp",
    hostname: "127.0.0.1",
    port: 7,
  });
  assertEquals(parseEndpoint("udp://[::1]:13"), {
    transport: "udp",
    hostname: "::1",
    port: 13,
  });
  assertEquals(parseEndpoint("unix:/tmp/echo.sock"), {
    transport: "unix",
    path: "/tmp/echo.sock",
  });
  assertEquals(parseEndpoint("unixpacket:/run/x.sock"), {
    transport: "unixpacket",
    path: "/run/x.sock",
  });
  assertEquals(parseEndpoint("example.com:80"), {
    transport: "tcp",
    hostname: "example.com",
    port: 80,
  });
});

Deno.test("parseEndpoint() rejects malformed input with EndpointError", () => {
  for (
    const bad of [
      "",
      "tcp://",
      "tcp://host",
      "tcp://::1:7",
      "udp://[::1]7",
      "tcp://[127.0.0.1]:7",
      "tcp://host:65536",
      "tcp://host:-1",
      "tcp://host:7x",
      "http://host:80",
      "unix:",
      "host:",
      ":80",
    ]
  ) {
    assertThrows(
      () => parseEndpoint(bad),
      EndpointError,
      undefined,
      `accepted '${bad}'`,
    );
  }
});

Deno.test("parsePort() takes 0..65535 in decimal only", () => {
  assertEquals(parsePort("0"), 0);
  assertEquals(parsePort("65535"), 65535);
  for (const bad of ["65536", "", " 1", "0x10", "1e3", "-0", "99999"]) {
    assertThrows(
      () => parsePort(bad),
      EndpointError,
      undefined,
      `accepted '${bad}'`,
    );
  }
});

Deno.test("splitHostPort() and joinHostPort() round-trip", () => {
  for (const text of ["127.0.0.1:7", "[::1]:7", "[fe80::1%eth0]:22", "a.b:1"]) {
    const { hostname, port } = splitHostPort(text);
    assertEquals(joinHostPort(hostname, port), text);
  }
});

Deno.test("formatAddr() prints addresses as the logs show them", () => {
  assertEquals(
    formatAddr({ transport: "tcp", hostname: "127.0.0.1", port: 7 }),
    "127.0.0.1:7",
  );
  assertEquals(
    formatAddr({ transport: "udp", hostname: "::1", port: 7 }),
    "[::1]:7",
  );
  assertEquals(formatAddr({ transport: "unix", path: "/tmp/s" }), "/tmp/s");
  assertEquals(formatAddr({ transport: "unix", path: "" }), "(unnamed)");
});

Deno.test("formatEndpoint() output parses back to the same endpoint", () => {
  for (
    const text of [
      "tcp://127.0.0.1:7",
      "udp://[::1]:7",
      "unix:/tmp/a",
      "unixpacket:/tmp/b",
    ]
  ) {
    assertEquals(formatEndpoint(parseEndpoint(text)), text);
  }
});
