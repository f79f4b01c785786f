// IndexedDB as a key → bytes store for the wasm core (crates/anytime-web/src/persist.rs).
// The browser API is callback-based; these wrappers turn it into promises. Every write is one
// transaction with "strict" durability, so a resolved put is on disk.

// Object stores: "kv" (account, MLS state, histories in chunks), "search" (the search index's
// postings, keys only) and "docs" (what a search hit shows). Version 2 added the last two.
const STORES = ["kv", "search", "docs"];

export function idbOpen(name) {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(name, 2);
    request.onupgradeneeded = () => {
      for (const store of STORES) {
        if (!request.result.objectStoreNames.contains(store)) request.result.createObjectStore(store);
      }
    };
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

function done(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

// Every key of a store (keys only: cheap even for long histories).
export function idbKeys(db, store) {
  return done(db.transaction(store, "readonly").objectStore(store).getAllKeys());
}

// Keys in [lower, upper], in order, at most `limit`.
export function idbKeysInRange(db, store, lower, upper, limit) {
  const range = IDBKeyRange.bound(lower, upper);
  return done(db.transaction(store, "readonly").objectStore(store).getAllKeys(range, limit));
}

// How many keys are in [lower, upper] (counted by the database, nothing read out).
export function idbCount(db, store, lower, upper) {
  return done(db.transaction(store, "readonly").objectStore(store).count(IDBKeyRange.bound(lower, upper)));
}

// The values of `keys` (undefined where absent), read in one transaction.
export function idbGetMany(db, store, keys) {
  const objects = db.transaction(store, "readonly").objectStore(store);
  return Promise.all(keys.map((key) => done(objects.get(key))));
}

// Runs `ops` in order in one transaction: [store, "put", key, value], [store, "delete", key] or
// [store, "range", lower, upper] (deletes the keys in between). "strict" durability: a resolved
// write is on disk.
export function idbWrite(db, ops) {
  return new Promise((resolve, reject) => {
    const tx = db.transaction(STORES, "readwrite", { durability: "strict" });
    for (const [store, kind, a, b] of ops) {
      const objects = tx.objectStore(store);
      if (kind === "put") objects.put(b, a);
      else if (kind === "delete") objects.delete(a);
      else if (kind === "range") objects.delete(IDBKeyRange.bound(a, b));
    }
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}

export function idbWipe(db, name) {
  db.close();
  return new Promise((resolve, reject) => {
    const request = indexedDB.deleteDatabase(name);
    request.onsuccess = () => resolve();
    request.onerror = () => reject(request.error);
    request.onblocked = () => resolve();
  });
}

// One tab at a time owns the local store: two tabs that each load the MLS state, advance it and
// write it back would fork it (reused ratchet keys, messages nobody can decrypt). The owner
// holds a Web Lock for as long as it lives; the browser releases it when the tab closes or
// crashes. Resolves once this tab holds the lock; calls onWaiting() first if another tab has it.
export function holdStoreLock(name, onWaiting) {
  if (!navigator.locks) {
    return Promise.reject(new Error("this browser has no Web Locks, which keep two tabs from corrupting each other"));
  }
  const forever = () => new Promise(() => {});
  return new Promise((resolve, reject) => {
    navigator.locks.request(name, { ifAvailable: true }, (lock) => {
      if (lock) {
        resolve();
        return forever();
      }
      onWaiting();
      navigator.locks.request(name, () => {
        resolve();
        return forever();
      }).catch(reject);
      return undefined;
    }).catch(reject);
  });
}
