/**
 * The conformance suite of {@link MessageStore}: one list of `Deno.test` cases that every backend
 * (memory, SQLite, Redis) runs unchanged, so the contract in `mod.ts` is checked, not hoped for.
 *
 * A backend's test file calls {@link storeContract} with a name and an `open` function. Invariants
 * of the suite:
 * - Each case opens its own fresh store (an empty namespace: a temp file, a key prefix) and calls
 *   `cleanup` at the end, whatever happened. Cases never share state, so they may run in parallel.
 * - Time-dependent cases drive the store's injected clock (`StoreOptions.now`); none sleeps.
 * - Cases a backend cannot support are registered as ignored through {@link StoreFeatures}, so
 *   the test report shows the gap instead of hiding it.
 *
 * The cases live in `_contract_history.ts` (ids, paging, resume) and `_contract_retention.ts`
 * (retention, idempotency, isolation, restarts); they register in that order.
 */
import type { MessageStore, StoreOptions } from "./mod.ts";
import { type CaseContext, type CaseOptions, clock } from "./_contract_helpers.ts";
import { historyCases } from "./_contract_history.ts";
import { retentionCases } from "./_contract_retention.ts";

/** Retention large enough that no case prunes unless it means to. */
const UNLIMITED = 100_000;

/** A store opened for one case, and how to reopen and dispose of it. */
export interface StoreHandle {
  /** The store under test, empty. */
  store: MessageStore;
  /** Opens the same data again after `store.close()`: a restart. Required when `durable`. */
  reopen?: () => Promise<MessageStore>;
  /** Removes what `open` created (temp files, keys); called after every store is closed. */
  cleanup: () => Promise<void>;
}

/** Opens a fresh, empty store with the given options. */
export type OpenStore = (options: StoreOptions) => Promise<StoreHandle>;

/** What a backend supports, and how its cases must be run. */
export interface StoreFeatures {
  /** History survives close and reopen (`StoreHandle.reopen` is given). Default false. */
  durable?: boolean;
  /** Expiry follows `StoreOptions.now` (idempotency window, `historyDays`). Default true. */
  injectedClock?: boolean;
  /** Skip the whole suite, e.g. when `redis-server` is not installed. Default false. */
  ignore?: boolean;
  /** Sanitizer settings for backends whose client keeps background resources. */
  sanitizeOps?: boolean;
  sanitizeResources?: boolean;
}

/**
 * Registers the store conformance cases for one backend. Test names read
 * `store contract (<name>): <behaviour>`.
 */
export function storeContract(name: string, open: OpenStore, features: StoreFeatures = {}): void {
  const durable = features.durable ?? false;
  const injectedClock = features.injectedClock ?? true;

  /** Registers one case: opens a store, runs `body`, closes whatever is open and cleans up. */
  function contract(
    behaviour: string,
    body: (t: CaseContext) => Promise<void>,
    options: CaseOptions = {},
  ): void {
    const ignore = (features.ignore ?? false) ||
      (options.needs === "clock" && !injectedClock) ||
      (options.needs === "durable" && !durable);
    const definition: Deno.TestDefinition = {
      name: `store contract (${name}): ${behaviour}`,
      ignore,
      async fn() {
        const c = clock();
        const handle = await open({
          historyLimit: UNLIMITED,
          historyDays: 0,
          now: c.now,
          ...options.overrides,
        });
        const opened = [handle.store];
        const reopen = async () => {
          if (handle.reopen === undefined) throw new Error("Cannot reopen: backend has no reopen");
          const store = await handle.reopen();
          opened.push(store);
          return store;
        };
        try {
          await body({ store: handle.store, reopen, clock: c });
        } finally {
          try {
            for (const store of opened) await store.close();
          } finally {
            await handle.cleanup();
          }
        }
      },
    };
    if (features.sanitizeOps !== undefined) definition.sanitizeOps = features.sanitizeOps;
    if (features.sanitizeResources !== undefined) {
      definition.sanitizeResources = features.sanitizeResources;
    }
    Deno.test(definition);
  }

  historyCases(contract);
  retentionCases(contract);
}
