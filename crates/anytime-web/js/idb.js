// IndexedDB as a key → bytes store for the wasm core (crates/anytime-web/src/persist.rs).
// The browser API is callback-based; these wrappers turn it into promises. Every write is one
// transaction with "strict" durability, so a resolved put is on disk.

const STORE = "kv";

export function idbOpen(name) {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(name, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

// Resolves to [keys, values].
export function idbLoadAll(db) {
  return new Promise((resolve, reject) => {
    const keys = [];
    const values = [];
    const tx = db.transaction(STORE, "readonly");
    const cursor = tx.objectStore(STORE).openCursor();
    cursor.onsuccess = () => {
      const c = cursor.result;
      if (c) {
        keys.push(c.key);
        values.push(c.value);
        c.continue();
      } else {
        resolve([keys, values]);
      }
    };
    cursor.onerror = () => reject(cursor.error);
  });
}

// Puts keys[i] = values[i] and deletes every key of `deletes`, in one transaction.
export function idbPut(db, keys, values, deletes) {
  return new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, "readwrite", { durability: "strict" });
    const store = tx.objectStore(STORE);
    for (let i = 0; i < keys.length; i++) store.put(values[i], keys[i]);
    for (const key of deletes) store.delete(key);
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
