// clip-gaze's page, the "Prompt" panel: the prompt a generator would answer to (POST /v1/interrogate),
// with a copy button, each part with its gain and, on selection, its map (the part's phrase through
// /v1/explain). It uses app.js's $, api, state, drawMap and closeMap.
"use strict";

const promptState = { answer: null, explained: {} };

function promptVocabularies() {
  return [...document.querySelectorAll("#vocab-list input:checked")].map((i) => i.value).join(",");
}

async function writePrompt() {
  if (!state.file) { $("prompt-status").textContent = "Choose a picture first."; return; }
  const form = new FormData();
  form.append("image", state.file, state.file.name || "pasted.png");
  form.append("mode", $("prompt-mode").value);
  const names = promptVocabularies();
  if (names) form.append("vocabularies", names);
  const caption = $("prompt-caption").value.trim();
  if (caption) form.append("caption", caption);
  $("prompt-status").textContent = "Writing the prompt…";
  $("prompt-run").disabled = true;
  promptState.explained = {};
  try {
    const answer = await api("POST", "/v1/interrogate", { form });
    promptState.answer = answer;
    promptState.file = state.file;
    renderPrompt(answer);
    $("prompt-status").textContent = "";
  } catch (e) {
    $("prompt-status").textContent = e.message;
  } finally {
    $("prompt-run").disabled = false;
  }
}

function renderPrompt(answer) {
  $("prompt-text").textContent = answer.prompt || "(empty)";
  $("prompt-summary").textContent = `${answer.mode} · cosine ${answer.cosine.toFixed(4)} · ${answer.tokens} of ` +
    `${answer.context_length} tokens · ${answer.candidates.toLocaleString()} candidates from ${answer.vocabularies.join(", ")}`;
  $("prompt-copy").disabled = !answer.prompt;
  const list = $("prompt-parts");
  list.replaceChildren(...answer.parts.map((p, i) => {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "part";
    const gain = `${p.gain >= 0 ? "+" : "−"}${Math.abs(p.gain).toFixed(4)}`;
    button.textContent = `${p.phrase}  ${gain}`;
    button.setAttribute("aria-label", `${p.phrase}: gain ${gain} (cosine after it ${p.cosine_after.toFixed(4)}, ` +
      `from ${p.vocabulary || "the start"}). Show its map.`);
    button.addEventListener("click", () => explainPart(button, i));
    li.append(button);
    return li;
  }));
  $("prompt-result").hidden = false;
}

async function copyPrompt() {
  const text = promptState.answer ? promptState.answer.prompt : "";
  try {
    await navigator.clipboard.writeText(text);
    $("prompt-status").textContent = "Copied.";
  } catch (e) {  // no clipboard permission: select the text so Ctrl+C copies it
    const range = document.createRange();
    range.selectNodeContents($("prompt-text"));
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    $("prompt-status").textContent = "Press Ctrl+C to copy the selected prompt.";
  }
}

async function explainPart(button, i) {
  for (const other of document.querySelectorAll(".part[aria-current]")) other.removeAttribute("aria-current");
  button.setAttribute("aria-current", "true");
  const part = promptState.answer.parts[i];
  closeMap();
  state.selected = { name: "compare", phrase: part.phrase };
  const panel = $("map-panel");
  panel.hidden = false;
  $("map-title").textContent = `Where “${part.phrase}” draws from`;
  $("map-caption").textContent = "Mapping…";
  try {
    if (!promptState.explained[part.phrase]) {
      const form = new FormData();
      form.append("image", promptState.file, promptState.file.name || "pasted.png");
      form.append("phrases", JSON.stringify([part.phrase]));
      form.append("top_k", "1");
      promptState.explained[part.phrase] = api("POST", "/v1/explain", { form });
    }
    const answer = await promptState.explained[part.phrase];
    if (!state.selected || state.selected.phrase !== part.phrase) return;
    const m = answer.results.compare.matches[0];
    drawMap(answer, m.heatmap, m.peak, `“${part.phrase}”: gain ${part.gain.toFixed(4)} to the prompt's cosine`);
  } catch (e) {
    delete promptState.explained[part.phrase];
    $("map-caption").textContent = "";
    $("map-status").textContent = e.message;
  }
  panel.scrollIntoView({ block: "nearest" });
}

document.addEventListener("DOMContentLoaded", () => {
  $("prompt-run").addEventListener("click", writePrompt);
  $("prompt-copy").addEventListener("click", copyPrompt);
});
