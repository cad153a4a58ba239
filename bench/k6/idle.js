// VUS idle VUs: every iteration only sleeps 30 s; stopped after DURATION.
import { sleep } from "k6";

export const options = {
  scenarios: {
    idle: {
      executor: "constant-vus",
      vus: Number(__ENV.VUS),
      duration: __ENV.DURATION,
      gracefulStop: "0s",
    },
  },
};

export default function () {
  sleep(30);
}
