/*
 * `Anchors.found_in` (wire/anchors.py) as one loop of C: the SQL pre-checks of both
 * engines run it over every statement a client sends, and compiled from Python it
 * still costs about sixty instructions a byte (each byte read is a bounds-checked
 * call returning a Python integer). The Python method stays the definition: it calls
 * this when the build has it, and the tests compare the two.
 *
 *   found_in(text, table, words, accept) -> bool
 *
 * `table` maps each byte to its anchor group + 1 (0: no word is anchored there);
 * `words[group]` holds the (word, offset of its anchor letter) pairs of that group;
 * `accept(text, word, start)`, unless None, must also take an occurrence.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

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
    const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(text);
    const unsigned char *group_of = (const unsigned char *)PyBytes_AS_STRING(table);
    Py_ssize_t size = PyBytes_GET_SIZE(text);
    Py_ssize_t groups = PyTuple_GET_SIZE(words);
    for (Py_ssize_t i = 0; i < size; i++) {
        unsigned char group = group_of[s[i]];
        if (group == 0)
            continue;
        if (group > groups) {
            PyErr_SetString(PyExc_ValueError, "the table names a group the words lack");
            return NULL;
        }
        PyObject *entries = PyTuple_GET_ITEM(words, group - 1);
        if (!PyTuple_Check(entries)) {
            PyErr_SetString(PyExc_TypeError, "each group of words is a tuple");
            return NULL;
        }
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(entries); k++) {
            PyObject *entry = PyTuple_GET_ITEM(entries, k);
            if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) < 2
                || !PyBytes_Check(PyTuple_GET_ITEM(entry, 0))) {
                PyErr_SetString(PyExc_TypeError, "each word is a (bytes, int) tuple");
                return NULL;
            }
            PyObject *word = PyTuple_GET_ITEM(entry, 0);
            Py_ssize_t at = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 1));
            if (at == -1 && PyErr_Occurred())
                return NULL;
            Py_ssize_t length = PyBytes_GET_SIZE(word);
            Py_ssize_t start = i - at;
            const unsigned char *w = (const unsigned char *)PyBytes_AS_STRING(word);
            /* (most candidates differ in their first or last byte: no memcmp call for them) */
            if (start < 0 || start + length > size || length == 0 || s[start] != w[0]
                || s[start + length - 1] != w[length - 1]
                || memcmp(s + start, w, (size_t)length) != 0)
                continue;
            if (accept == Py_None)
                Py_RETURN_TRUE;
            PyObject *where = PyLong_FromSsize_t(start);
            if (where == NULL)
                return NULL;
            PyObject *call_args[3] = {text, word, where};
            PyObject *taken = PyObject_Vectorcall(accept, call_args, 3, NULL);
            Py_DECREF(where);
            if (taken == NULL)
                return NULL;
            int truth = PyObject_IsTrue(taken);
            Py_DECREF(taken);
            if (truth < 0)
                return NULL;
            if (truth)
                Py_RETURN_TRUE;
        }
    }
    Py_RETURN_FALSE;
}

static PyMethodDef anchors_methods[] = {
    {"found_in", (PyCFunction)(void (*)(void))anchors_found_in, METH_FASTCALL,
     "found_in(text, table, words, accept) -> whether one of the words occurs in text"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef anchors_module = {
    PyModuleDef_HEAD_INIT,
    "sluice.wire._anchors",
    "The anchored word search of wire/anchors.py, in C.",
    -1,
    anchors_methods,
};

PyMODINIT_FUNC
PyInit__anchors(void)
{
    return PyModule_Create(&anchors_module);
}
