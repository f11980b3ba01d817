/*
 * replay_main.c: the main() of a fuzz target built without libFuzzer (a normal build),
 * so that `meson test` runs every target on its committed corpus:
 *
 *   fuzz_TARGET [--mutations N] PATH...
 *
 * Each PATH is a corpus file or a directory of them (read in name order); every file is
 * passed once to LLVMFuzzerTestOneInput in a buffer of exactly its size, so a sanitized
 * build catches a read past the end. With --mutations N it then runs N deterministic
 * mutations of the corpus files (flipped bytes, truncations, insertions, large varints
 * where protobuf lengths may be), the same every run. A target reports a failed check
 * by aborting, as under libFuzzer. Exits 1 if no corpus file was found.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "rng.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct input {
    uint8_t *data;
    size_t size;
} input;

typedef struct corpus {
    input *in;
    size_t n, cap;
} corpus;

static void die(const char *what, const char *path)
{
    fprintf(stderr, "fuzz replay: %s: %s\n", what, path);
    exit(2);
}

static void corpus_add_file(corpus *c, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        die("cannot open", path);
    struct stat st;
    if (fstat(fileno(f), &st) != 0)
        die("cannot stat", path);
    input in = {.data = malloc(st.st_size ? (size_t)st.st_size : 1), .size = (size_t)st.st_size};
    if (!in.data || fread(in.data, 1, in.size, f) != in.size)
        die("cannot read", path);
    fclose(f);
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 64;
        c->in = realloc(c->in, c->cap * sizeof(*c->in));
        if (!c->in)
            die("out of memory reading", path);
    }
    c->in[c->n++] = in;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static void corpus_add(corpus *c, const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        die("no such file or directory", path);
    if (!S_ISDIR(st.st_mode)) {
        corpus_add_file(c, path);
        return;
    }
    struct dirent **names;
    int n = scandir(path, &names, NULL, by_name);
    if (n < 0)
        die("cannot list", path);
    for (int i = 0; i < n; i++) {
        char file[4096];
        snprintf(file, sizeof(file), "%s/%s", path, names[i]->d_name);
        if (names[i]->d_name[0] != '.' && stat(file, &st) == 0 && S_ISREG(st.st_mode))
            corpus_add_file(c, file);
        free(names[i]);
    }
    free(names);
}

/* Run one input from a buffer of exactly its size. */
static void run_one(const uint8_t *data, size_t size)
{
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        die("out of memory", "input");
    memcpy(copy, data, size);
    LLVMFuzzerTestOneInput(copy, size);
    free(copy);
}

/* One deterministic mutant of `in` into buf (room for in->size + 8 bytes); its size. */
static size_t mutate(gk_rng *r, const input *in, uint8_t *buf)
{
    size_t n = in->size;
    memcpy(buf, in->data, n);
    int edits = 1 + (int)gk_rng_below(r, 4);
    for (int k = 0; k < edits && n > 0; k++) {
        switch (gk_rng_below(r, 4)) {
        case 0: /* flip a byte */
            buf[gk_rng_below(r, n)] ^= (uint8_t)(1 + gk_rng_below(r, 255));
            break;
        case 1: /* truncate */
            n = gk_rng_below(r, n + 1);
            break;
        case 2: /* insert a random byte */
            if (n < in->size + 8) {
                size_t at = gk_rng_below(r, n + 1);
                memmove(buf + at + 1, buf + at, n - at);
                buf[at] = (uint8_t)gk_rng_next(r);
                n++;
            }
            break;
        default: /* a large varint where a length may be */
            if (n > 2) {
                size_t at = gk_rng_below(r, n - 1);
                buf[at] = 0xff;
                buf[at + 1] = 0x7f;
            }
        }
    }
    return n;
}

int main(int argc, char **argv)
{
    long mutations = 0;
    corpus c = {0};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--mutations") == 0 && i + 1 < argc)
            mutations = atol(argv[++i]);
        else
            corpus_add(&c, argv[i]);
    }
    if (c.n == 0) {
        fprintf(stderr, "usage: %s [--mutations N] CORPUS_FILE_OR_DIR... (no corpus file found)\n",
                argv[0]);
        return 1;
    }
    size_t largest = 0;
    for (size_t i = 0; i < c.n; i++) {
        run_one(c.in[i].data, c.in[i].size);
        largest = c.in[i].size > largest ? c.in[i].size : largest;
    }
    uint8_t *buf = malloc(largest + 8);
    gk_rng r;
    gk_rng_seed(&r, 7, 0, 0, 0);
    for (long m = 0; m < mutations; m++) {
        const input *in = &c.in[gk_rng_below(&r, c.n)];
        run_one(buf, mutate(&r, in, buf));
    }
    printf("%s: %zu corpus files and %ld mutations of them ran without a failed check\n",
           argv[0], c.n, mutations);
    for (size_t i = 0; i < c.n; i++)
        free(c.in[i].data);
    free(c.in);
    free(buf);
    return 0;
}
