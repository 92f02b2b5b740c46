/*
 * A counter loop whose live state sits in registers (integer and SSE): every round recomputes a
 * linear-congruential sequence and a floating-point sum in locals and compares them with copies
 * kept in memory. A dump/restore that loses or garbles registers, the stack or the FPU state is
 * caught by the loop itself; verification also checks the counter kept advancing.
 */
#include "common.h"

static volatile uint64_t g_rounds;     /* rounds completed */
static volatile uint64_t g_lcg = 12345; /* memory copy of the register-held LCG state */
static volatile double g_sum;          /* memory copy of the register-held FP sum */
static volatile uint64_t g_mismatches; /* rounds where registers and memory disagreed */
static volatile uint64_t g_first_bad;  /* round of the first disagreement */

int main(int argc, char **argv) {
    tgt_init(argc, argv);
    uint64_t lcg = 12345, rounds = 0;
    double sum = 0.0;
    uint64_t at_ready = 0;
    int verifying = 0;
    long long verify_deadline = 0;
    uint64_t at_verify = 0;

    for (;;) {
        /* A short burst of register-only work between sleeps. */
        for (int i = 0; i < 2000; i++) {
            lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
            sum += (double)(lcg >> 40) * 0.5;
        }
        uint64_t expect = g_lcg;
        double expect_sum = g_sum;
        for (int i = 0; i < 2000; i++) {
            expect = expect * 6364136223846793005ULL + 1442695040888963407ULL;
            expect_sum += (double)(expect >> 40) * 0.5;
        }
        if (expect != lcg || expect_sum != sum) {
            if (!g_mismatches) g_first_bad = rounds;
            g_mismatches++;
            lcg = expect; /* resynchronise so one glitch is counted once */
            sum = expect_sum;
        }
        g_lcg = lcg;
        g_sum = sum;
        g_rounds = ++rounds;

        if (rounds == 20) {
            at_ready = rounds;
            tgt_ready(NULL);
        }
        if (rounds > 20 && !verifying && tgt_ctl_exists("verify")) {
            verifying = 1;
            at_verify = rounds;
            verify_deadline = tgt_now_ms() + 100;
        }
        if (verifying == 1 && tgt_now_ms() >= verify_deadline) {
            verifying = 2;
            CHECK(at_verify > at_ready, "counter did not advance between ready and verify (%llu)",
                  (unsigned long long)at_verify);
            CHECK(rounds > at_verify + 3, "counter stalled after restore: %llu -> %llu in 100 ms",
                  (unsigned long long)at_verify, (unsigned long long)rounds);
            CHECK_EQ("register/memory mismatches", g_mismatches, 0);
            if (g_mismatches) FAIL("first mismatch at round %llu", (unsigned long long)g_first_bad);
            tgt_publish_result();
        }
        tgt_sleep_ms(rounds < 20 ? 1 : 5);
    }
}
