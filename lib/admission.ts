/**
 * Who a stream server lets in: one ordered pipeline, the same for every
 * connection, that judges a client address by the access list, then the
 * connections its source already has (`perSource`), then the server's own
 * limit (`maxConnections`), and counts what it admits. The only thing the
 * PROXY protocol changes is which address is judged (the one its header
 * carries) and when (once the header is in): while the header comes, the
 * connection holds a slot, so a flood of headers that never arrive is
 * bounded by the server's limit like any other.
 *
 * @module
 */

import type { AccessPolicy } from "./access.ts";
import { sourceKey } from "./source_key.ts";

/** Why a connection is refused; one flood log per reason. */
export type RefusalReason = "access" | "per-source" | "full" | "rate";

/** A refusal: its reason, and the words for its log line. */
export interface Refusal {
  readonly reason: RefusalReason;
  /** `not allowed`, `too many connections from 192.0.2.1 (max 2 per source)`... */
  readonly why: string;
}

/** What an {@linkcode Admission} judges by. */
export interface AdmissionRules {
  /** Who may connect; everyone when absent. */
  access?: AccessPolicy;
  /** Most connections at once from one source; 0: no limit. */
  perSource: number;
  /** Most connections at once. */
  maxConnections: number;
  /** Connections open now (in a worker group, the whole group's). */
  open(): number;
}

/**
 * The admission pipeline of a stream server, and the count per source it
 * keeps for `perSource`: {@linkcode Admission.admit} is the one place a
 * source's count goes up, {@linkcode Admission.release} the one where it
 * goes down.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { Admission } from "./admission.ts";
 *
 * let open = 0;
 * const admission = new Admission({
 *   perSource: 1,
 *   maxConnections: 10,
 *   open: () => open,
 * });
 * const client = { transport: "tcp", hostname: "192.0.2.1", port: 5000 } as const;
 * const first = admission.admit(client);
 * assertEquals(first, { source: "192.0.2.1" });
 * open++;
 * assertEquals(admission.admit({ ...client, port: 5001 }), {
 *   reason: "per-source",
 *   why: "too many connections from 192.0.2.1 (max 1 per source)",
 * });
 * admission.release("192.0.2.1");
 * ```
 */
export class Admission {
  readonly #rules: AdmissionRules;
  /** Open connections by source, for `perSource`. */
  readonly #bySource = new Map<string, number>();

  /** Judges by `rules`. */
  constructor(rules: AdmissionRules) {
    this.#rules = rules;
  }

  /**
   * Judges `client`: the access list, then its source's count, then the
   * server's limit. `holding` says the connection already holds one of
   * the open slots (a PROXY connection whose header came): the limit is
   * then judged without it. Admitted, the source (when `perSource`
   * counts) is counted and returned, to {@linkcode Admission.release}
   * when the connection ends.
   */
  admit(
    client: Deno.Addr,
    holding = false,
  ): Refusal | { readonly source?: string } {
    const rules = this.#rules;
    if (rules.access && !rules.access.allows(client)) {
      return {
        reason: rules.access.overRate ? "rate" : "access",
        why: "not allowed",
      };
    }
    // A Unix client (a LOCAL header on a Unix listener) has no address to
    // count.
    const source = rules.perSource > 0 && "hostname" in client
      ? sourceKey(client)
      : undefined;
    if (
      source !== undefined &&
      (this.#bySource.get(source) ?? 0) >= rules.perSource
    ) {
      return {
        reason: "per-source",
        why:
          `too many connections from ${source} (max ${rules.perSource} per source)`,
      };
    }
    const full = this.full(holding);
    if (full) return full;
    if (source !== undefined) {
      this.#bySource.set(source, (this.#bySource.get(source) ?? 0) + 1);
    }
    return { source };
  }

  /**
   * The last step alone, for a connection whose client is not known yet
   * (a PROXY header to come): whether the server is full. `holding` as
   * for {@linkcode Admission.admit}.
   */
  full(holding = false): Refusal | undefined {
    const { maxConnections } = this.#rules;
    if (this.#rules.open() - (holding ? 1 : 0) < maxConnections) {
      return undefined;
    }
    return {
      reason: "full",
      why: `too many connections (max ${maxConnections})`,
    };
  }

  /** A connection of `source` (from {@linkcode Admission.admit}) ended. */
  release(source: string | undefined): void {
    if (source === undefined) return;
    const left = this.#bySource.get(source)! - 1;
    if (left > 0) this.#bySource.set(source, left);
    else this.#bySource.delete(source);
  }
}

/**
 * Whether `verdict`, from {@linkcode Admission.admit}, is a refusal.
 *
 * @example
 * ```ts
 * import { assert } from "@std/assert";
 * import { Admission, isRefusal } from "./admission.ts";
 *
 * const full = new Admission({ perSource: 0, maxConnections: 0, open: () => 0 });
 * assert(isRefusal(full.admit({ transport: "tcp", hostname: "192.0.2.1", port: 1 })));
 * ```
 */
export function isRefusal(
  verdict: Refusal | { readonly source?: string },
): verdict is Refusal {
  return "reason" in verdict;
}
