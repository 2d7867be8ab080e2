/*
 * The wire layer's byte loops in C. The Python code stays the definition: it calls these
 * when the build has them, and the tests compare the two.
 *
 *   found_in(text, table, words, accept) -> bool
 *
 * `Anchors.found_in` (wire/anchors.py): the pre-checks of both engines run it over
 * every statement a client sends, and compiled from Python it still costs about sixty
 * instructions a byte (each byte read is a bounds-checked call returning a Python
 * integer). `table` maps each byte to its anchor group + 1 (0: no word is anchored
 * there); `words[group]` holds the (word, offset of its anchor letter) pairs of that
 * group; `accept(text, word, start)`, unless None, must also take an occurrence.
 *
 *   quick(text, classes, table, words, reads, changes, defaults) -> int
 *
 * `wire/pg/sql.py` `_quick` for a text without a parenthesis, whole: lower-cased (ASCII,
 * as bytes.lower), no second statement, none of the anchored `words`, and a first word
 * (after the bytes `classes` marks BLANK, the bytes it marks NAME) among `reads`, or
 * among `changes` without any of `defaults`, or "insert". Answers QUICK_NONE,
 * QUICK_WRITES or QUICK_FULL as `_quick` does, or -1 where it does not decide (a
 * parenthesis, or a text longer than its buffer): the caller then runs `_quick`.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

#define QUICK_ASK (-1)
#define QUICK_NONE 0
#define QUICK_WRITES 1
#define QUICK_FULL 2
#define IS_NAME 4   /* (wire/pg/sql.py _IS_NAME) */
#define IS_BLANK 16 /* (wire/pg/sql.py _IS_BLANK) */
#define QUICK_MAX 4096

/* One word of a group, read from its (word, offset) tuple once. */
typedef struct {
    const unsigned char *bytes;
    Py_ssize_t length;
    Py_ssize_t at; /* the offset of its anchor letter */
    PyObject *word; /* (borrowed from the words tuple, which the cache holds) */
} Word;

/* A `words` tuple read into C arrays: the words of group g are all[first[g]:first[g + 1]]. */
typedef struct {
    PyObject *words; /* a strong reference: its address stays its own while cached */
    Py_ssize_t groups;
    Py_ssize_t *first;
    Word *all;
} Groups;

/* The callers pass the same few module-level tuples on every call: each is read once. */
#define CACHED 16
static Groups cache[CACHED];
static int cache_next;

static void
groups_clear(Groups *g)
{
    Py_CLEAR(g->words);
    PyMem_Free(g->first);
    PyMem_Free(g->all);
    g->first = NULL;
    g->all = NULL;
    g->groups = 0;
}

/* `words` read (or found already read), or NULL with an exception set. */
static Groups *
groups_of(PyObject *words)
{
    for (int i = 0; i < CACHED; i++)
        if (cache[i].words == words)
            return &cache[i];
    Py_ssize_t groups = PyTuple_GET_SIZE(words), total = 0;
    for (Py_ssize_t g = 0; g < groups; g++) {
        PyObject *entries = PyTuple_GET_ITEM(words, g);
        if (!PyTuple_Check(entries)) {
            PyErr_SetString(PyExc_TypeError, "each group of words is a tuple");
            return NULL;
        }
        total += PyTuple_GET_SIZE(entries);
    }
    Py_ssize_t *first = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(groups + 1));
    Word *all = PyMem_Malloc(sizeof(Word) * (size_t)(total ? total : 1));
    if (first == NULL || all == NULL) {
        PyMem_Free(first);
        PyMem_Free(all);
        PyErr_NoMemory();
        return NULL;
    }
    Py_ssize_t n = 0;
    for (Py_ssize_t g = 0; g < groups; g++) {
        PyObject *entries = PyTuple_GET_ITEM(words, g);
        first[g] = n;
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(entries); k++) {
            PyObject *entry = PyTuple_GET_ITEM(entries, k);
            if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) < 2
                || !PyBytes_Check(PyTuple_GET_ITEM(entry, 0))) {
                PyErr_SetString(PyExc_TypeError, "each word is a (bytes, int) tuple");
                goto fail;
            }
            PyObject *word = PyTuple_GET_ITEM(entry, 0);
            Py_ssize_t at = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 1));
            if (at == -1 && PyErr_Occurred())
                goto fail;
            all[n].bytes = (const unsigned char *)PyBytes_AS_STRING(word);
            all[n].length = PyBytes_GET_SIZE(word);
            all[n].at = at;
            all[n].word = word;
            n++;
        }
    }
    first[groups] = n;
    Groups *slot = &cache[cache_next];
    cache_next = (cache_next + 1) % CACHED;
    groups_clear(slot);
    Py_INCREF(words);
    slot->words = words;
    slot->groups = groups;
    slot->first = first;
    slot->all = all;
    return slot;
fail:
    PyMem_Free(first);
    PyMem_Free(all);
    return NULL;
}

/* Whether one of `words` occurs in s[0:size]: 1, 0, or -1 with an exception set. */
static int
search(PyObject *text, const unsigned char *s, Py_ssize_t size, const unsigned char *group_of,
       PyObject *words, PyObject *accept)
{
    Groups *read = groups_of(words);
    if (read == NULL)
        return -1;
    Py_ssize_t groups = read->groups;
    const Py_ssize_t *first = read->first;
    const Word *all = read->all;
    for (Py_ssize_t i = 0; i < size; i++) {
        unsigned char group = group_of[s[i]];
        if (group == 0)
            continue;
        if (group > groups) {
            PyErr_SetString(PyExc_ValueError, "the table names a group the words lack");
            return -1;
        }
        for (Py_ssize_t k = first[group - 1]; k < first[group]; k++) {
            const Word *w = &all[k];
            Py_ssize_t start = i - w->at, length = w->length;
            /* (most candidates differ in their first or last byte: no memcmp call for them) */
            if (start < 0 || start + length > size || length == 0 || s[start] != w->bytes[0]
                || s[start + length - 1] != w->bytes[length - 1]
                || memcmp(s + start, w->bytes, (size_t)length) != 0)
                continue;
            if (accept == Py_None)
                return 1;
            PyObject *where = PyLong_FromSsize_t(start);
            if (where == NULL)
                return -1;
            /* (held for the call: the cache may let its tuple go meanwhile) */
            PyObject *word = w->word;
            Py_INCREF(word);
            PyObject *call_args[3] = {text, word, where};
            PyObject *taken = PyObject_Vectorcall(accept, call_args, 3, NULL);
            Py_DECREF(where);
            Py_DECREF(word);
            if (taken == NULL)
                return -1;
            int truth = PyObject_IsTrue(taken);
            Py_DECREF(taken);
            if (truth != 0)
                return truth; /* (1, or -1 with the exception set) */
            /* `accept` may have searched too, and its tuples taken this one's place */
            read = groups_of(words);
            if (read == NULL)
                return -1;
            first = read->first;
            all = read->all;
        }
    }
    return 0;
}

static PyObject *
anchors_found_in(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "found_in(text, table, words, accept) takes four arguments");
        return NULL;
    }
    PyObject *text = args[0], *table = args[1], *words = args[2], *accept = args[3];
    if (!PyBytes_Check(text) || !PyBytes_Check(table) || PyBytes_GET_SIZE(table) != 256
        || !PyTuple_Check(words)) {
        PyErr_SetString(PyExc_TypeError, "found_in(bytes, 256 bytes, tuple, accept)");
        return NULL;
    }
    int found = search(text, (const unsigned char *)PyBytes_AS_STRING(text),
                       PyBytes_GET_SIZE(text),
                       (const unsigned char *)PyBytes_AS_STRING(table), words, accept);
    if (found < 0)
        return NULL;
    return PyBool_FromLong(found);
}

/* Whether `word` is one of the bytes objects of the tuple `among`. */
static int
one_of(const unsigned char *word, Py_ssize_t length, PyObject *among)
{
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(among); k++) {
        PyObject *item = PyTuple_GET_ITEM(among, k);
        if (PyBytes_GET_SIZE(item) == length && memcmp(PyBytes_AS_STRING(item), word, (size_t)length) == 0)
            return 1;
    }
    return 0;
}

static int
all_bytes(PyObject *tuple)
{
    if (!PyTuple_Check(tuple))
        return 0;
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(tuple); k++)
        if (!PyBytes_Check(PyTuple_GET_ITEM(tuple, k)))
            return 0;
    return 1;
}

static PyObject *
anchors_quick(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError,
                        "quick(text, classes, table, words, reads, changes, defaults) takes seven arguments");
        return NULL;
    }
    PyObject *text = args[0], *classes = args[1], *table = args[2], *words = args[3];
    PyObject *reads = args[4], *changes = args[5], *defaults = args[6];
    if (!PyBytes_Check(text) || !PyBytes_Check(classes) || PyBytes_GET_SIZE(classes) != 256
        || !PyBytes_Check(table) || PyBytes_GET_SIZE(table) != 256 || !PyTuple_Check(words)
        || !all_bytes(reads) || !all_bytes(changes) || !all_bytes(defaults)) {
        PyErr_SetString(PyExc_TypeError,
                        "quick(bytes, 256 bytes, 256 bytes, tuple, bytes tuple, bytes tuple, bytes tuple)");
        return NULL;
    }
    Py_ssize_t size = PyBytes_GET_SIZE(text);
    const unsigned char *raw = (const unsigned char *)PyBytes_AS_STRING(text);
    if (size > QUICK_MAX || memchr(raw, '(', (size_t)size) != NULL)
        return PyLong_FromLong(QUICK_ASK);
    unsigned char low[QUICK_MAX];
    /* (branch-free, so that the compiler can do it sixteen bytes at a time) */
    for (Py_ssize_t i = 0; i < size; i++) {
        unsigned char c = raw[i];
        low[i] = (unsigned char)(c | (((unsigned char)(c - 'A') < 26) << 5));
    }
    /* a second statement: a semicolon before the trailing "; \t\r\n" */
    Py_ssize_t end = size;
    while (end > 0 && (low[end - 1] == ';' || low[end - 1] == ' ' || low[end - 1] == '\t'
                       || low[end - 1] == '\r' || low[end - 1] == '\n'))
        end--;
    if (end > 0 && memchr(low, ';', (size_t)end) != NULL)
        return PyLong_FromLong(QUICK_FULL);
    int found = search(text, low, size, (const unsigned char *)PyBytes_AS_STRING(table), words,
                       Py_None);
    if (found < 0)
        return NULL;
    if (found)
        return PyLong_FromLong(QUICK_FULL);
    const unsigned char *class_of = (const unsigned char *)PyBytes_AS_STRING(classes);
    Py_ssize_t start = 0;
    while (start < size && (class_of[low[start]] & IS_BLANK))
        start++;
    Py_ssize_t stop = start;
    while (stop < size && (class_of[low[stop]] & IS_NAME))
        stop++;
    const unsigned char *first = low + start;
    Py_ssize_t length = stop - start;
    if (one_of(first, length, reads))
        return PyLong_FromLong(QUICK_NONE);
    if (one_of(first, length, changes)) {
        int defaulted = 0;
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(defaults) && !defaulted; k++) {
            PyObject *word = PyTuple_GET_ITEM(defaults, k);
            Py_ssize_t n = PyBytes_GET_SIZE(word);
            defaulted = n == 0 || memmem(low, (size_t)size, PyBytes_AS_STRING(word), (size_t)n) != NULL;
        }
        if (!defaulted)
            return PyLong_FromLong(QUICK_NONE);
    }
    if (length == 6 && memcmp(first, "insert", 6) == 0)
        return PyLong_FromLong(QUICK_WRITES);
    return PyLong_FromLong(QUICK_FULL);
}

/* nul_at(data, start) -> int: data.find(b"\0", start), without the method lookup and the
 * argument parsing of bytes.find (about a thousand instructions a call, compiled). */
static PyObject *
anchors_nul_at(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyBytes_Check(args[0]) || !PyLong_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "nul_at(bytes, int)");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    if (start < 0 || start >= size)
        return PyLong_FromLong(-1);
    const char *s = PyBytes_AS_STRING(args[0]);
    const char *found = memchr(s + start, 0, (size_t)(size - start));
    return PyLong_FromSsize_t(found == NULL ? -1 : found - s);
}

static PyMethodDef anchors_methods[] = {
    {"nul_at", (PyCFunction)(void (*)(void))anchors_nul_at, METH_FASTCALL,
     "nul_at(data, start) -> the index of the first NUL byte at or after start, or -1"},
    {"found_in", (PyCFunction)(void (*)(void))anchors_found_in, METH_FASTCALL,
     "found_in(text, table, words, accept) -> whether one of the words occurs in text"},
    {"quick", (PyCFunction)(void (*)(void))anchors_quick, METH_FASTCALL,
     "quick(text, classes, table, words, reads, changes, defaults) -> the PostgreSQL "
     "pre-check's answer for a text without a parenthesis, or -1"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef anchors_module = {
    PyModuleDef_HEAD_INIT,
    "sluice.wire._anchors",
    "The wire layer's byte loops (wire/anchors.py, wire/pg/sql.py, wire/pg/messages.py), in C.",
    -1,
    anchors_methods,
};

PyMODINIT_FUNC
PyInit__anchors(void)
{
    return PyModule_Create(&anchors_module);
}
