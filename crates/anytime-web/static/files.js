// Files in the web UI: attach a file to a chat and open a received one. The wasm core seals each
// chunk with a fresh key before it leaves the page (FileSealer) and opens what is downloaded
// (FileOpener, which also checks the sealed file's SHA-256); this module moves the bytes with
// fetch (docs/protocol.md "Attachments") and shows progress. The server keeps only ciphertext.

import { FileSealer } from "/pkg/anytime_web.js";
import { h, toast } from "/dom.js";

// Set once by app.js: { app, queueRender }.
let ctx = null;
export function setup(context) { ctx = context; }

// msg_id → { progress: 0..1, url, error }: downloads of this page's life.
const downloads = new Map();
let generation = 0;
const changed = () => { generation++; ctx.queueRender(); };

/** Part of the chat view's "did anything change" key. */
export function state() { return String(generation); }

class FileError extends Error {
  constructor(code, message) { super(message); this.code = code; }
}

async function api(method, path, body, json = true) {
  const response = await fetch(path, {
    method,
    headers: { authorization: `Bearer ${ctx.app.sessionToken()}`, ...(json && body ? { "content-type": "application/json" } : {}) },
    body: json && body ? JSON.stringify(body) : body,
  });
  if (!response.ok) {
    let value = null;
    try { value = await response.json(); } catch (_) { /* not JSON */ }
    throw new FileError(value?.code || "error", value?.message || `HTTP ${response.status}`);
  }
  return response.status === 204 ? null : response.json();
}

export function humanSize(bytes) {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let value = bytes, unit = 0;
  while (value >= 1000 && unit + 1 < units.length) { value /= 1000; unit++; }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** The 📎 button of the composer: pick files and send each to `conv`. */
export function attachButton(conv) {
  const input = h("input", { type: "file", id: "attach-input", class: "visually-hidden", multiple: true,
    "aria-label": "Attach files",
    onchange: async () => {
      const files = [...input.files];
      input.value = "";
      for (const file of files) await sendFile(conv(), file);
    } });
  return [input, h("button", { type: "button", class: "secondary", "aria-label": "Attach", title: "Send a file",
    onclick: () => input.click() }, "📎")];
}

/** Seals `file` chunk by chunk, uploads it in whole parts, then sends its message. */
export async function sendFile(conv, file) {
  const status = document.getElementById("upload-status");
  const show = (text) => { if (status) status.textContent = text; };
  try {
    const sealer = new FileSealer(file.size);
    let blob = await api("POST", "/v1/blobs", { conv, size: sealer.sealedSize() });
    const perRequest = Math.min(blob.upload_bytes_max, 4 * blob.part_bytes);
    const chunk = FileSealer.chunkBytes();
    // Sealed chunks not sent yet; a request carries whole parts (Blob slices copy nothing).
    let pending = [], pendingBytes = 0;
    const put = async (body) => {
      blob = await api("PUT", `/v1/blobs/${blob.id}?offset=${blob.received}`, body, false);
      show(`Uploading ${file.name}: ${Math.floor((100 * blob.received) / blob.size)} %`);
    };
    for (let at = 0; !sealer.done(); at += chunk) {
      const plain = new Uint8Array(await file.slice(at, at + chunk).arrayBuffer());
      const sealed = sealer.sealNext(plain);
      pending.push(sealed);
      pendingBytes += sealed.length;
      while (pendingBytes >= perRequest) {
        const all = new Blob(pending);
        await put(all.slice(0, perRequest));
        const rest = all.slice(perRequest);
        pending = rest.size ? [rest] : [];
        pendingBytes = rest.size;
      }
    }
    if (pendingBytes) await put(new Blob(pending));
    const fields = { blob: blob.id, key: sealer.keyHex(), digest: sealer.digestHex(), size: file.size,
      name: file.name || "file", mime: file.type || "application/octet-stream", caption: "" };
    await ctx.app.sendAttachment(conv, JSON.stringify(fields));
    show("");
  } catch (error) {
    show("");
    toast(error.code === "quota_exceeded" ? "Your file storage is full for now: it frees up as people fetch your files."
      : error.code === "payload_too_large" ? `${file.name} is larger than this server accepts.`
      : `Could not send ${file.name}: ${error.message || error}`, true);
  }
}

/** Fetches, checks and opens the file of `e`; images show inline, other files download. */
async function open(chat, e) {
  const entry = { progress: 0 };
  downloads.set(e.msg_id, entry);
  changed();
  try {
    const opener = ctx.app.attachmentOpener(chat.conv, e.msg_id);
    const response = await fetch(`/v1/blobs/${opener.blob()}`, { headers: { authorization: `Bearer ${ctx.app.sessionToken()}` } });
    if (!response.ok) {
      let value = null;
      try { value = await response.json(); } catch (_) { /* not JSON */ }
      throw new FileError(value?.code || "error", value?.message || `HTTP ${response.status}`);
    }
    const reader = response.body.getReader();
    const parts = [];
    let received = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      received += value.length;
      parts.push(opener.push(value));
      entry.progress = received / opener.sealedSize();
      changed();
    }
    parts.push(opener.finish());
    entry.url = URL.createObjectURL(new Blob(parts, { type: opener.mime() }));
    entry.name = opener.name();
    changed();
    api("POST", `/v1/blobs/${opener.blob()}/fetched`).catch(() => {});
    if (!e.attachment.mime.startsWith("image/")) save(entry);
  } catch (error) {
    entry.error = error.code === "blob_not_found" ? "The server no longer has this file." : (error.message || String(error));
    changed();
  }
}

function save(entry) {
  const a = h("a", { href: entry.url, download: entry.name });
  document.body.append(a);
  a.click();
  a.remove();
}

/** The body of a file message: an image once opened, else a card with name, size and a button. */
export function attachmentBody(chat, e) {
  const a = e.attachment;
  const got = downloads.get(e.msg_id);
  if (got?.url && a.mime.startsWith("image/")) {
    return h("figure", { class: "attachment image" }, h("img", { src: got.url, alt: a.name }));
  }
  const action = got?.error ? h("span", { class: "error" }, got.error)
    : got?.url ? h("button", { type: "button", class: "secondary", onclick: () => save(got) }, "Save again")
    : got ? h("progress", { max: 1, value: got.progress, "aria-label": `Downloading ${a.name}` })
    : h("button", { type: "button", class: "secondary", "data-action": "download", onclick: () => open(chat, e) },
      a.mime.startsWith("image/") ? "Show" : "Download");
  return h("div", { class: "attachment file" },
    h("span", { class: "file-icon", "aria-hidden": "true" }, "📄"),
    h("span", { class: "file-name" }, a.name),
    h("span", { class: "file-size muted" }, humanSize(a.size)),
    action);
}
