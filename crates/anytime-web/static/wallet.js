// The wallet in the web UI: balances, payment PIN, sandbox top-ups, history with CSV export,
// and paying someone in a chat. Money moves on the server's ledger (HTTP/JSON, docs/protocol.md
// "Wallet"); the chat learns of it from a payment message the wasm core encrypts, so the note
// never reaches the server in plaintext.

import { h, toast, time, dialog, field } from "/dom.js";

// Set once by app.js: { app, account }.
let ctx = null;
export function setup(context) { ctx = context; }

const TEST_CARDS = [
  ["4242 4242 4242 4242", "succeeds"],
  ["4000 0000 0000 3220", "asks for a second step (code 123456)"],
  ["4000 0000 0000 0002", "is declined"],
];

class WalletError extends Error {
  constructor(code, message) { super(message); this.code = code; }
}

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: { authorization: `Bearer ${ctx.app.sessionToken()}`, ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  let value = null;
  try { value = text ? JSON.parse(text) : null; } catch (_) { value = text; }
  if (!response.ok) throw new WalletError(value?.code || "error", value?.message || `HTTP ${response.status}`);
  return value;
}

const ADVICE = {
  insufficient_funds: "Not enough money: top up in Wallet.",
  pin_wrong: "Wrong payment PIN.",
  pin_locked: "Too many wrong PINs: payments are locked for 15 minutes.",
  limit_exceeded: "Over the per-payment or daily limit.",
};

function failed(error) {
  toast(ADVICE[error.code] || error.message || String(error), true);
}

function newKey() {
  return crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(16).slice(2)}`;
}

// ---------------------------------------------------------------- wallet screen

export async function walletDialog() {
  let summary;
  try { summary = await api("GET", "/v1/wallet"); } catch (error) { failed(error); return; }
  const currencies = summary.currencies;
  const options = (selected) => currencies.map((c) => h("option", { value: c, selected: c === selected }, c));
  const first = summary.balances[0]?.currency || "USD";
  const historyList = h("ul", { class: "wallet-history", "aria-label": "Wallet history" });
  const historyCurrency = h("select", { id: "history-currency", onchange: () => loadHistory() }, options(first));
  async function loadHistory() {
    const page = await api("GET", `/v1/wallet/history?currency=${historyCurrency.value}&limit=50`).catch((e) => { failed(e); return null; });
    if (!page) return;
    historyList.replaceChildren(...page.transfers.map((t) => h("li", { "data-transfer": t.id },
      h("span", {}, t.purpose === "top_up" ? "Top-up" : t.direction === "out" ? `To ${ctx.name(t.counterparty)}` : `From ${ctx.name(t.counterparty)}`),
      h("span", { class: "time muted" }, `${new Date(t.at_ms).toLocaleDateString()} ${time(t.at_ms)}`),
      h("strong", { class: t.direction === "out" ? "out" : "in" }, `${t.direction === "out" ? "−" : "+"}${t.amount} ${t.currency}`))));
    if (!page.transfers.length) historyList.append(h("li", { class: "muted" }, "Nothing yet"));
  }
  const exportCsv = async () => {
    const response = await fetch(`/v1/wallet/history?currency=${historyCurrency.value}&limit=200&format=csv`,
      { headers: { authorization: `Bearer ${ctx.app.sessionToken()}` } });
    if (!response.ok) { toast("Export failed", true); return; }
    const url = URL.createObjectURL(await response.blob());
    const link = h("a", { href: url, download: `anytime-wallet-${historyCurrency.value}.csv` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  };
  const topUpForm = h("form", { class: "row", "aria-label": "Top up", onsubmit: async (ev) => {
    ev.preventDefault();
    const form = ev.target;
    const body = { key: newKey(), currency: form.currency.value, amount: form.amount.value.trim(), card: form.card.value };
    try {
      let result = await api("POST", "/v1/wallet/top-up", body);
      if (result.status === "confirmation_required") {
        const code = prompt("Sandbox second step: enter the code (the sandbox accepts 123456)");
        if (code === null) return;
        result = await api("POST", "/v1/wallet/top-up/confirm", { challenge: result.challenge, code });
      }
      if (result.status !== "succeeded") { toast("The sandbox declined the card", true); return; }
      toast(`Topped up ${result.transfer.amount} ${result.transfer.currency}`);
      d.close();
      walletDialog();
    } catch (error) { failed(error); }
  } },
  field("Amount", { id: "top-up-amount", name: "amount", inputmode: "decimal", required: true, autocomplete: "off" }),
  h("div", { class: "field" }, h("label", { for: "top-up-currency" }, "Currency"), h("select", { id: "top-up-currency", name: "currency" }, options(first))),
  field("Test card number", { id: "top-up-card", name: "card", value: TEST_CARDS[0][0], autocomplete: "off" }),
  h("button", { type: "submit" }, "Top up"));
  const pinForm = h("form", { class: "row", "aria-label": "Payment PIN", onsubmit: async (ev) => {
    ev.preventDefault();
    const form = ev.target;
    try {
      await api("POST", "/v1/wallet/pin", { pin: form.pin.value, current_pin: form.current?.value || null });
      toast("Payment PIN saved");
      d.close();
      walletDialog();
    } catch (error) { failed(error); }
  } },
  summary.pin_set ? field("Current PIN", { id: "current-pin", name: "current", type: "password", inputmode: "numeric", autocomplete: "off" }) : null,
  field(summary.pin_set ? "New PIN (4–8 digits)" : "Payment PIN (4–8 digits)", { id: "new-pin", name: "pin", type: "password", inputmode: "numeric", pattern: "[0-9]{4,8}", required: true, autocomplete: "off" }),
  h("button", { type: "submit" }, summary.pin_set ? "Change PIN" : "Set PIN"));
  const d = dialog("Wallet", [
    h("p", { class: "sandbox", role: "note" }, "Sandbox: test cards only, no real money moves."),
    h("ul", { class: "balances", "aria-label": "Balances" }, summary.balances.length
      ? summary.balances.map((b) => h("li", { "data-currency": b.currency },
        h("strong", { class: "amount" }, `${b.balance} ${b.currency}`),
        b.available !== b.balance ? h("span", { class: "muted" }, ` (${b.available} available)`) : null))
      : h("li", { class: "muted" }, "No money yet: top up below.")),
    h("h3", {}, "Top up"),
    h("p", { class: "muted small" }, TEST_CARDS.map(([card, what]) => `${card} ${what}`).join(" · ")),
    topUpForm,
    h("h3", {}, "Payment PIN"),
    h("p", { class: "muted small" }, summary.pin_set ? "Asked before money leaves your wallet." : "Set one to send money."),
    pinForm,
    h("h3", {}, "History"),
    h("div", { class: "row" }, h("div", { class: "field" }, h("label", { for: "history-currency" }, "Currency"), historyCurrency),
      h("button", { type: "button", class: "secondary", onclick: exportCsv }, "Export CSV")),
    historyList,
    h("p", { class: "muted small" }, `Limits: ${summary.transfer_units_max.toLocaleString()} per payment, ${summary.daily_units_max.toLocaleString()} per day (in units of the currency).`),
  ], null);
  d.classList.add("wallet");
  loadHistory();
}

// ---------------------------------------------------------------- paying in a chat

export async function payDialog(chat) {
  const others = chat.members.filter((m) => !m.me);
  if (!others.length) { toast("Nobody to pay in this chat", true); return; }
  let summary;
  try { summary = await api("GET", "/v1/wallet"); } catch (error) { failed(error); return; }
  if (!summary.pin_set) { toast("Set a payment PIN in Wallet first", true); walletDialog(); return; }
  const first = summary.balances[0]?.currency || "USD";
  const d = dialog(chat.kind === "direct" ? `Send money to ${chat.title}` : "Send money", [
    h("p", { class: "sandbox", role: "note" }, "Sandbox money."),
    chat.kind === "group" ? h("div", { class: "field" }, h("label", { for: "pay-to" }, "To"),
      h("select", { id: "pay-to" }, others.map((m) => h("option", { value: m.user }, m.name)))) : null,
    h("div", { class: "row" },
      field("Amount", { id: "pay-amount", inputmode: "decimal", required: true, autocomplete: "off" }),
      h("div", { class: "field" }, h("label", { for: "pay-currency" }, "Currency"),
        h("select", { id: "pay-currency" }, summary.currencies.map((c) => h("option", { value: c, selected: c === first }, c))))),
    field("Note (only this chat can read it)", { id: "pay-note", autocomplete: "off", maxlength: 200 }),
    field("Payment PIN", { id: "pay-pin", type: "password", inputmode: "numeric", required: true, autocomplete: "off" }),
  ], h("button", { type: "submit", value: "ok", onclick: async (ev) => {
    ev.preventDefault();
    const to = chat.kind === "group" ? d.querySelector("#pay-to").value : others[0].user;
    const amount = d.querySelector("#pay-amount").value.trim();
    const currency = d.querySelector("#pay-currency").value;
    const note = d.querySelector("#pay-note").value.trim();
    const pin = d.querySelector("#pay-pin").value;
    if (!amount || !pin) return;
    const button = ev.currentTarget;
    button.disabled = true;
    const key = newKey();
    try {
      // A lost answer is retried with the same key: the server pays once.
      let transfer;
      for (let attempt = 0; ; attempt++) {
        try {
          transfer = await api("POST", "/v1/wallet/pay", { key, to, currency, amount, pin });
          break;
        } catch (error) {
          if (error instanceof WalletError || attempt >= 2) throw error;
        }
      }
      await ctx.app.sendPayment(chat.conv, transfer.id, to, transfer.amount, transfer.currency, note);
      d.close();
      toast(`Sent ${transfer.amount} ${transfer.currency}`);
    } catch (error) {
      failed(error);
      button.disabled = false;
    }
  } }, "Send"));
}

// ---------------------------------------------------------------- payment bubbles

// transfer id → "confirmed" | "unconfirmed", for payments to this account; `checks` counts the
// answers, so the timeline re-renders when one comes in.
const checked = new Map();
let checks = 0;
export function paymentChecks() { return checks; }

export function paymentBody(e, queueRender) {
  const p = e.payment;
  if (!p) return null;
  const who = e.own ? "You" : e.sender;
  const whom = p.to_me ? "you" : p.to;
  const status = p.to_me ? checked.get(p.transfer) : null;
  if (p.to_me && status === undefined) {
    checked.set(p.transfer, "checking");
    api("GET", `/v1/wallet/transfers/${p.transfer}`)
      .then((t) => checked.set(p.transfer, t.direction === "in" && t.amount === p.amount && t.currency === p.currency ? "confirmed" : "unconfirmed"))
      .catch(() => checked.set(p.transfer, "unconfirmed"))
      .finally(() => { checks += 1; queueRender(); });
  }
  return h("div", { class: "payment", "data-transfer": p.transfer },
    h("span", { class: "payment-icon", "aria-hidden": "true" }, "💸"),
    h("strong", { class: "payment-amount" }, `${p.amount} ${p.currency}`),
    h("span", { class: "payment-parties" }, ` ${who} sent ${whom}`),
    status === "confirmed" ? h("span", { class: "payment-check", "data-check": "confirmed" }, " ✓ in your wallet")
      : status === "unconfirmed" ? h("span", { class: "payment-check warning", "data-check": "unconfirmed" }, " ⚠ not found in your wallet") : null);
}
