// Reference relay on Node.js with the `ws` package: ws.send() per client per message.
//   npm install --prefix benchmarks/relays ws
//   node benchmarks/relays/node_ws.js --upstream ws://127.0.0.1:9000/ --port 8765
const WebSocket = require("ws");
const args = process.argv.slice(2);
const opt = (name) => args[args.indexOf(name) + 1];
const wss = new WebSocket.Server({ host: "127.0.0.1", port: Number(opt("--port")), perMessageDeflate: false });
const upstream = new WebSocket(opt("--upstream"), { perMessageDeflate: false });
upstream.on("message", (data, isBinary) => {
  for (const client of wss.clients) {
    if (client.readyState === WebSocket.OPEN) client.send(data, { binary: isBinary });
  }
});
