// POST JSON to the sandbox order API with a status check.
import http from "k6/http";
import { check } from "k6";

export const options = {
  scenarios: {
    post: { executor: "constant-vus", vus: Number(__ENV.VUS), duration: __ENV.DURATION },
  },
};

const params = (key) => ({
  headers: { "Content-Type": "application/json", "Idempotency-Key": key },
});

export default function () {
  const body = JSON.stringify({ product_id: __ENV.PRODUCT, user_id: `u${__VU}` });
  const key = `${__ENV.PREFIX}-${__VU}-${__ITER}`;
  const res = http.post(__ENV.URL, body, params(key));
  check(res, { "status is 202": (r) => r.status === 202 });
}
