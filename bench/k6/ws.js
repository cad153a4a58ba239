// WebSocket: each iteration connects, sends COUNT messages every EVERY_MS ms,
// closes once COUNT echoes came back (or after TIMEOUT_MS).
import ws from "k6/ws";
import { check } from "k6";

export const options = {
  scenarios: {
    ws: { executor: "constant-vus", vus: Number(__ENV.VUS), duration: __ENV.DURATION },
  },
};

const COUNT = Number(__ENV.COUNT);

export default function () {
  let received = 0;
  const res = ws.connect(__ENV.URL, {}, function (socket) {
    let sent = 0;
    socket.on("open", () => {
      socket.setInterval(() => {
        if (sent < COUNT) {
          socket.send(JSON.stringify({ sent_at: Date.now(), vu: __VU }));
          sent++;
        }
      }, Number(__ENV.EVERY_MS));
    });
    socket.on("message", () => {
      received++;
      if (received >= COUNT) socket.close();
    });
    socket.setTimeout(() => socket.close(), Number(__ENV.TIMEOUT_MS));
  });
  check(res, { connected: (r) => r && r.status === 101 });
  check(received, { "received all": (n) => n >= COUNT });
}
