// Wallet sign-in, shared by the connect page (/connect) and the dashboard (/):
// Sign-In with Ethereum (EIP-4361) through the browser's EIP-1193 wallet, the
// account API it unlocks, and showing the API key a first sign-in creates.
// A plain script, not a module, so that the connect page's own inline script
// can use it as well; it defines one global, `signin`.
//
// Both pages have #connect (the button), #status (what is happening) and
// #new-key with #key-value and #copy (a new key, shown once).
"use strict";
const signin = (() => {
  const $ = (id) => document.getElementById(id);

  function say(text, isError = false) {
    $("status").textContent = text;
    $("status").className = isError ? "error" : "";
  }

  // A JSON call to this service. `token` is the account session's, when
  // signed in; failures throw an Error with the service's message and the
  // HTTP status (a 401 means the session is over).
  async function api(path, { token = null, ...options } = {}) {
    const headers = { ...(options.headers || {}) };
    if (token) headers.authorization = `Bearer ${token}`;
    if (options.body) headers["content-type"] = "application/json";
    const response = await fetch(path, { ...options, headers });
    const body = response.status === 204 ? null : await response.json().catch(() => null);
    if (!response.ok) {
      const error = new Error((body && body.message) || `HTTP ${response.status}`);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  // personal_sign takes the message as hex of its UTF-8 bytes.
  function toHex(text) {
    return "0x" + Array.from(new TextEncoder().encode(text), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function showKey(key) {
    $("key-value").textContent = key;
    $("copy").textContent = "Copy";
    $("new-key").hidden = false;
  }

  // Asks the wallet for an address and a signature of the service's own
  // EIP-4361 message, then trades it for an account session. The answer of
  // /api/v2/auth/verify ({token, projectId, address, apiKey?}), or null when
  // there is no wallet or the sign-in failed (#status then says why). A
  // first sign-in's key is shown at once: it is never shown again.
  async function signIn() {
    const wallet = window.ethereum;
    if (!wallet) {
      say("No wallet found in this browser: install one (for example a browser extension) and reload.", true);
      return null;
    }
    $("connect").disabled = true;
    try {
      say("Asking your wallet for your address…");
      const [address] = await wallet.request({ method: "eth_requestAccounts" });
      const chainId = parseInt(await wallet.request({ method: "eth_chainId" }), 16);
      const query = new URLSearchParams({ address, chainId: String(chainId) });
      const { message } = await api(`/api/v2/auth/nonce?${query}`);
      say("Please sign the message in your wallet…");
      const signature = await wallet.request({ method: "personal_sign", params: [toHex(message), address] });
      const result = await api("/api/v2/auth/verify", { method: "POST", body: JSON.stringify({ message, signature }) });
      say(`Signed in as ${result.address}.`);
      if (result.apiKey) showKey(result.apiKey);
      return result;
    } catch (error) {
      say(`Sign-in failed: ${error.message}`, true);
      return null;
    } finally {
      $("connect").disabled = false;
    }
  }

  // Ends the account session on the service. API keys are not touched.
  async function signOut(token) {
    try {
      await api("/api/v2/auth/logout", { method: "POST", token });
    } catch {
      // Already signed out or expired: either way the session is over here.
    }
    $("new-key").hidden = true;
  }

  // The clipboard needs a secure context (https or localhost); elsewhere the
  // key is selected for the person to copy.
  async function copyKey() {
    try {
      await navigator.clipboard.writeText($("key-value").textContent);
      $("copy").textContent = "Copied";
    } catch {
      const range = document.createRange();
      range.selectNodeContents($("key-value"));
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      $("copy").textContent = "Selected: press Ctrl+C";
    }
  }

  $("copy").addEventListener("click", copyKey);
  return Object.freeze({ api, say, signIn, signOut, showKey });
})();
