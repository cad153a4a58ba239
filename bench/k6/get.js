// Plain GET, closed model: VUS looping VUs for DURATION.
import http from "k6/http";

export const options = {
  scenarios: {
    get: { executor: "constant-vus", vus: Number(__ENV.VUS), duration: __ENV.DURATION },
  },
};

export default function () {
  http.get(__ENV.URL);
}
