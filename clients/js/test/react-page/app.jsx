// The React page of the FastAPI demo (scripts/demo-fastapi.sh) and of
// test/react.test.mjs: useWsgate on wsgate's chat route (the example
// FastAPI service as upstream) and on the durable AI stream route, where
// the service publishes the answer through the Python Publisher. Tokens come
// from window.getToken (the test) or the URL fragment (#chat=JWT&stream=JWT,
// printed by the demo script).

import { StrictMode, useEffect, useState } from 'react';
import { createRoot } from 'react-dom/client';

import { useWsgate } from '@wsgate/client/react';

const params = new URLSearchParams(location.search);
const gate = params.get('gate'); // ws://host:port of wsgate
const fragment = new URLSearchParams(location.hash.slice(1));
const getToken = (sid) => (window.getToken ? window.getToken(sid) : fragment.get(sid ? 'stream' : 'chat'));
window.recoveries = [];

function App() {
  const [session, setSession] = useState(params.get('session'));
  window.setSession = setSession; // the test switches conversations
  const chat = useWsgate(`${gate}/ws/chat`, { token: () => getToken('') });
  const stream = useWsgate(session ? `${gate}/ws/ai/stream/${session}` : null, {
    token: () => getToken(session),
    resume: true,
    keep: 1000,
    on: { recovery: (ev) => window.recoveries.push(ev) },
  });
  useEffect(() => {
    window.ask = (text) => chat.sendJSON('ask', { session, text });
  }, [chat.sendJSON, session]);

  const hello = chat.messages.find((m) => m.json?.type === 'hello')?.json.data;
  const tokens = stream.messages.filter((m) => m.json?.type === 'token').map((m) => m.json.data);
  const complete = stream.messages.find((m) => m.json?.type === 'complete')?.json.data;
  return (
    <main>
      <h1>wsgate + FastAPI</h1>
      <p>
        chat <span id="chat-state">{chat.state}</span>, stream <span id="stream-state">{stream.state}</span>
      </p>
      <p>
        the upstream sees <span id="hello">{hello ? `${hello.user}@${hello.tenant}` : ''}</span>
      </p>
      <p id="answer">{tokens.map((t) => t.token).join(' ')}</p>
      <p>
        token indexes: <span id="indexes">{tokens.map((t) => t.index).join(',')}</span>
      </p>
      <pre id="complete">{complete ? JSON.stringify(complete) : ''}</pre>
      <form
        onSubmit={(ev) => {
          ev.preventDefault();
          stream.clearMessages();
          chat.sendJSON('ask', { session, text: ev.currentTarget.prompt.value });
        }}
      >
        <input name="prompt" defaultValue="Summarise revenue by region for Q3" size="50" />
        <button>Ask</button>
      </form>
      <p>
        answers requested: <span id="accepted">{chat.messages.filter((m) => m.json?.type === 'accepted').length}</span>
      </p>
    </main>
  );
}

createRoot(document.getElementById('root')).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
