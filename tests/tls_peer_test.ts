/**
 * Distinguished names written as stunnel writes them (OpenSSL's one-line
 * form, checked against `openssl x509 -nameopt oneline,-esc_msb,-space_eq`
 * for names that each format escapes its own way), and the chain a TLS 1.2
 * client certificate must follow (`tls12_client_cert.ts`).
 */

import { assertEquals } from "@std/assert";
import { X509Certificate } from "node:crypto";
import { certificateNames, formatDn } from "../lib/tls_peer.ts";
import { Tls12ClientCertGate } from "../lib/tls12_client_cert.ts";
import { missing, runCommand } from "./_helpers.ts";

const noOpenssl = missing("openssl");

/** A self-signed certificate for `subject` (openssl -subj syntax), PEM. */
async function selfSigned(dir: string, subject: string): Promise<string> {
  const { code, stderr } = await runCommand("openssl", [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-days",
    "1",
    "-utf8",
    "-multivalue-rdn",
    "-keyout",
    `${dir}/key.pem`,
    "-out",
    `${dir}/cert.pem`,
    "-subj",
    subject,
  ]);
  if (code !== 0) throw new Error(stderr);
  return `${dir}/cert.pem`;
}

Deno.test({
  name:
    "formatDn writes a subject as openssl -nameopt oneline,-esc_msb,-space_eq (stunnel) does",
  ignore: noOpenssl,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "sockets-dn-" });
    try {
      for (
        const subject of [
          "/C=DE/O=Example, Inc./CN=alice",
          '/DC=org/DC=example/O=a\\\\b "q"/OU=x+UID=7/CN=Jürgen #1 /emailAddress=j@e.org',
          "/CN=#hash/street=Main;St/L= lead/serialNumber=42/title=<x>",
        ]
      ) {
        const file = await selfSigned(dir, subject);
        const { stdout } = await runCommand("openssl", [
          "x509",
          "-in",
          file,
          "-noout",
          "-subject",
          "-nameopt",
          "oneline,-esc_msb,-space_eq",
        ]);
        const expected = new TextDecoder().decode(stdout).trim().replace(
          /^subject=/,
          "",
        );
        const der = new X509Certificate(await Deno.readTextFile(file)).raw;
        assertEquals(formatDn(certificateNames(der).subject), expected);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "a TLS 1.2 client certificate signed by an intermediate that the client sends passes the gate; one whose intermediate is missing gets unknown_ca",
  ignore: noOpenssl,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "sockets-chain-" });
    const openssl = async (...args: string[]) => {
      const { code, stderr } = await runCommand("openssl", args);
      if (code !== 0) throw new Error(stderr);
    };
    try {
      const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
      await openssl(
        "req",
        "-x509",
        ...ec,
        "-nodes",
        "-days",
        "1",
        "-keyout",
        `${dir}/root.key`,
        "-out",
        `${dir}/root.pem`,
        "-subj",
        "/CN=root",
      );
      await Deno.writeTextFile(
        `${dir}/ca.ext`,
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n",
      );
      for (
        const [name, issuer, ext] of [["mid", "root", "ca.ext"], [
          "leaf",
          "mid",
          "",
        ]]
      ) {
        await openssl(
          "req",
          ...ec,
          "-nodes",
          "-keyout",
          `${dir}/${name}.key`,
          "-out",
          `${dir}/${name}.csr`,
          "-subj",
          `/CN=${name}`,
        );
        await openssl(
          "x509",
          "-req",
          "-in",
          `${dir}/${name}.csr`,
          "-days",
          "1",
          "-CA",
          `${dir}/${issuer}.pem`,
          "-CAkey",
          `${dir}/${issuer}.key`,
          "-CAcreateserial",
          ...(ext ? ["-extfile", `${dir}/${ext}`] : []),
          "-out",
          `${dir}/${name}.pem`,
        );
      }
      const der = async (name: string) =>
        new X509Certificate(await Deno.readTextFile(`${dir}/${name}.pem`)).raw;
      const root = new X509Certificate(
        await Deno.readTextFile(`${dir}/root.pem`),
      );
      const verdict = (chain: Uint8Array[]) => {
        const gate = new Tls12ClientCertGate({ mode: "required", ca: [root] });
        // A ClientHello offering TLS 1.2 only, then the Certificate message.
        const hello = clientHello12();
        gate.feed(hello);
        return gate.feed(certificateRecord(chain)).refusal?.alert[6];
      };
      assertEquals(verdict([await der("leaf"), await der("mid")]), undefined);
      assertEquals(verdict([await der("leaf")]), 48);
      assertEquals(verdict([]), 40);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** A minimal ClientHello record that offers TLS 1.2 and nothing newer. */
function clientHello12(): Uint8Array {
  const body = [
    0x03,
    0x03,
    ...new Array(32).fill(7), // client_version, random
    0, // session_id
    0,
    2,
    0xc0,
    0x2b, // one cipher suite
    1,
    0, // null compression
  ];
  const message = [1, 0, 0, body.length, ...body];
  return new Uint8Array([22, 3, 1, 0, message.length, ...message]);
}

/** A handshake record holding a Certificate message with `chain`. */
function certificateRecord(chain: Uint8Array[]): Uint8Array {
  const entries = chain.flatMap((der) => [
    der.length >> 16,
    (der.length >> 8) & 0xff,
    der.length & 0xff,
    ...der,
  ]);
  const list = [
    entries.length >> 16,
    (entries.length >> 8) & 0xff,
    entries.length & 0xff,
    ...entries,
  ];
  const message = [
    11,
    list.length >> 16,
    (list.length >> 8) & 0xff,
    list.length & 0xff,
    ...list,
  ];
  return new Uint8Array([
    22,
    3,
    3,
    message.length >> 8,
    message.length & 0xff,
    ...message,
  ]);
}
