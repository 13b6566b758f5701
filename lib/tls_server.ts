/**
 * A stream server's TLS: the context new handshakes get (swapped whole by
 * {@linkcode ServerTls.reload}, so connections in flight keep theirs and
 * new ones get the new files), client certificates (asked for with
 * `clientCa`; a client without one is refused by the engine with
 * certificate_required when they are required, one whose certificate does
 * not chain to `clientCa`, or whose subject does not match
 * `clientSubject`, is refused here once its handshake is done), and the
 * {@linkcode TlsSession} a handler learns.
 *
 * @module
 */

import { X509Certificate } from "node:crypto";
import type { SecureContext } from "node:tls";
import { escapeControlChars } from "./escape_control_chars.ts";
import type { ClientCertMode, TlsServerFiles } from "./tls.ts";
import type { ClientCertRequest } from "./tls12_client_cert.ts";
import type { TlsEngine } from "./tls_engine.ts";
import {
  checkTlsCertificate,
  startServerTls,
  tlsServerContext,
} from "./tls_node.ts";
import {
  peerCertificate,
  pemSubject,
  type TlsConnInfo,
  type TlsSession,
} from "./tls_peer.ts";

/** How a server asks for and judges client certificates. */
export interface ClientCertPolicy {
  /** `required` (default) or `optional`; only with `clientCa`. */
  clientCert?: ClientCertMode;
  /** A verified certificate's subject (as `formatDn` writes it) must match this. */
  clientSubject?: RegExp;
}

/** What a handshake came to: the session, or why the client is refused. */
export type TlsVerdict = { session: TlsSession } | { refused: string };

/**
 * OpenSSL's verify codes (what the engine's `verifyError` says) in words.
 */
const VERIFY_ERRORS: Record<string, string> = {
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: "not signed by a client CA",
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: "not signed by a client CA",
  UNABLE_TO_GET_ISSUER_CERT: "not signed by a client CA",
  SELF_SIGNED_CERT_IN_CHAIN: "not signed by a client CA",
  DEPTH_ZERO_SELF_SIGNED_CERT: "self-signed",
  CERT_HAS_EXPIRED: "expired",
  CERT_NOT_YET_VALID: "not valid yet",
  CERT_SIGNATURE_FAILURE: "its signature does not verify",
};

/**
 * The TLS of one stream server. `start` begins a connection's handshake
 * with the current context; `verdict` judges it once done; `reload`
 * checks new files (one handshake in memory) and only then swaps them in.
 *
 * @example
 * ```ts ignore
 * const tls = new ServerTls({ cert, key, clientCa }, { clientCert: "required" });
 * const conn = tls.start(accepted);
 * await conn.handshake();
 * const verdict = tls.verdict(conn);
 * ```
 */
export class ServerTls {
  readonly #clientCert?: ClientCertMode;
  readonly #clientSubject?: RegExp;
  #context: SecureContext;
  #serverSubject: string;
  /** With client CAs: what the engines ask of a client, the CAs parsed. */
  #request?: ClientCertRequest;

  /** Builds the context from `files`; `policy` applies with `files.clientCa`. */
  constructor(files: TlsServerFiles, policy: ClientCertPolicy = {}) {
    if (files.clientCa !== undefined) {
      this.#clientCert = policy.clientCert ?? "required";
      this.#clientSubject = policy.clientSubject;
    }
    this.#context = tlsServerContext(files);
    this.#serverSubject = pemSubject(files.cert);
    this.#request = this.#requestFor(files);
  }

  #requestFor(files: TlsServerFiles): ClientCertRequest | undefined {
    if (this.#clientCert === undefined || files.clientCa === undefined) {
      return undefined;
    }
    const blocks = files.clientCa.match(
      /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g,
    ) ?? [];
    return {
      mode: this.#clientCert,
      ca: blocks.map((block) => new X509Certificate(block)),
    };
  }

  /**
   * What new connections run on: the runtime's engine, or `node:tls`
   * (chosen by `chooseTlsEngine` in `tls_engine.ts` before the first).
   */
  engine: TlsEngine = "native";

  /** The context new handshakes get now. */
  get context(): SecureContext {
    return this.#context;
  }

  /** Starts the server side of TLS on an admitted connection. */
  start(conn: Deno.Conn): Deno.TlsConn & TlsConnInfo {
    return startServerTls(conn, this.#context, this.#request, this.engine);
  }

  /**
   * After the handshake: the session, or why the client is refused (a
   * certificate that does not chain to the client CAs, or whose subject
   * does not match).
   */
  verdict(conn: TlsConnInfo): TlsVerdict {
    const facts = conn.handshakeFacts();
    const session: TlsSession = {
      protocol: facts.protocol,
      cipher: facts.cipher,
      serverSubject: this.#serverSubject,
    };
    if (this.#clientCert === undefined) return { session };
    if (!facts.peerCertificate) {
      return this.#clientCert === "required"
        ? { refused: "no client certificate" }
        : { session };
    }
    const client = peerCertificate(facts.peerCertificate);
    const subject = escapeControlChars(client.subject);
    if (facts.verifyError) {
      const why = VERIFY_ERRORS[facts.verifyError] ?? facts.verifyError;
      return {
        refused:
          `client certificate ${subject} refused: ${why} (${facts.verifyError})`,
      };
    }
    if (this.#clientSubject && !this.#clientSubject.test(client.subject)) {
      return {
        refused:
          `client certificate ${subject} refused: subject does not match ${this.#clientSubject}`,
      };
    }
    session.client = client;
    return { session };
  }

  /**
   * Swaps in new files for the handshakes to come, once one handshake in
   * memory shows they work (rejects, keeping the old, otherwise).
   * Connections in flight are not touched.
   */
  async reload(files: TlsServerFiles): Promise<void> {
    if ((files.clientCa === undefined) !== (this.#clientCert === undefined)) {
      throw new TypeError(
        "a reload cannot add or remove the client CAs: restart for that",
      );
    }
    await checkTlsCertificate(files);
    const context = tlsServerContext(files);
    const request = this.#requestFor(files);
    this.#serverSubject = pemSubject(files.cert);
    this.#request = request;
    this.#context = context;
  }
}
