// Small DOM helpers and dialogs shared by the web UI's modules. No state of the app here.

// ---------------------------------------------------------------- tiny DOM helpers

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function toast(text, isError = false) {
  const toastBox = document.getElementById("toast");
  toastBox.textContent = text;
  toastBox.className = isError ? "error shown" : "shown";
  toastBox.setAttribute("role", isError ? "alert" : "status");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { toastBox.className = ""; }, 4000);
}

export async function call(promise) {
  try {
    const text = await promise;
    return typeof text === "string" ? JSON.parse(text) : text;
  } catch (error) {
    toast(String(error), true);
    throw error;
  }
}

export function time(ms) {
  if (!ms) return "";
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

export function dayKey(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`;
}

export function dayLabel(ms) {
  const today = new Date();
  const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
  if (dayKey(ms) === dayKey(today.getTime())) return "Today";
  if (dayKey(ms) === dayKey(yesterday.getTime())) return "Yesterday";
  const d = new Date(ms);
  const sameYear = d.getFullYear() === today.getFullYear();
  return d.toLocaleDateString([], { weekday: sameYear ? "long" : undefined, day: "numeric", month: "long", year: sameYear ? undefined : "numeric" });
}

// Initials in a colour picked from the name, until profile pictures exist.
export function avatar(name) {
  const words = name.replace(/^user /, "").split(/[\s._-]+/).filter(Boolean);
  const initials = (words.length > 1 ? words[0][0] + words[1][0] : (words[0] || "?").slice(0, 2)).toUpperCase();
  let hash = 0;
  for (const ch of name) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return h("span", { class: "avatar", "aria-hidden": "true", style: `--hue: ${hash % 360}` }, initials);
}

export function presenceText(p) {
  if (!p) return "";
  if (p.online) return "online";
  return p.last_seen_ms ? `last seen ${new Date(p.last_seen_ms).toLocaleString()}` : "offline";
}

// ---------------------------------------------------------------- dialogs

export function dialog(title, body, actions) {
  const d = h("dialog", { "aria-labelledby": "dialog-title" },
    h("form", { method: "dialog", class: "dialog" },
      h("h2", { id: "dialog-title" }, title),
      body,
      h("div", { class: "actions" }, actions, h("button", { value: "cancel", type: "submit", class: "secondary" }, "Close"))));
  d.addEventListener("close", () => d.remove());
  document.body.append(d);
  d.showModal();
  return d;
}

export function field(label, attrs) {
  const id = attrs.id;
  return h("div", { class: "field" }, h("label", { for: id }, label), h("input", attrs));
}

